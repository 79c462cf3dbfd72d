#include "client-limit-watch.h"

#include <gtest/gtest.h>

namespace {

using xaps::ClientLimitWatch;

TEST(ClientLimitWatch, SaysNothingBelowNinetyPercent) {
    ClientLimitWatch watch(4096);
    for (std::size_t open : {1u, 1000u, 3686u}) {
        EXPECT_FALSE(watch.on_accept(open)) << open;
    }
}

TEST(ClientLimitWatch, WarnsOnceAtNinetyPercentNamingTheLimit) {
    ClientLimitWatch watch(4096);
    // 90% of 4096 is 3686.4: the first count at or past it is 3687.
    const std::optional<std::string> warning = watch.on_accept(3687);
    ASSERT_TRUE(warning);
    EXPECT_EQ(
        warning->rfind("3687 connections open, 90% of service xaps { client_limit = 4096 }", 0), 0u)
        << *warning;
    EXPECT_NE(warning->find("raise client_limit"), std::string::npos) << *warning;
    EXPECT_FALSE(watch.on_accept(3700));
    EXPECT_FALSE(watch.on_accept(4096));
}

TEST(ClientLimitWatch, WarnsAgainOnlyAfterFallingBelowHalf) {
    ClientLimitWatch watch(1000);
    ASSERT_TRUE(watch.on_accept(900));
    EXPECT_FALSE(watch.on_accept(500)); // half: still within the same episode
    EXPECT_FALSE(watch.on_accept(950));
    EXPECT_FALSE(watch.on_accept(499)); // below half: the episode is over
    const std::optional<std::string> again = watch.on_accept(901);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->rfind("901 connections open, 90% of service xaps { client_limit = 1000 }", 0),
              0u)
        << *again;
}

TEST(ClientLimitWatch, AnUnknownLimitIsNeverWarnedAbout) {
    ClientLimitWatch watch(0);
    EXPECT_FALSE(watch.on_accept(1));
    EXPECT_FALSE(watch.on_accept(100000));
}

TEST(ClientLimitWatch, ASmallLimitWarnsAtItsOwnNinetyPercent) {
    ClientLimitWatch watch(1);
    const std::optional<std::string> warning = watch.on_accept(1);
    ASSERT_TRUE(warning);
    EXPECT_EQ(warning->rfind("1 connections open, 100% of service xaps { client_limit = 1 }", 0),
              0u)
        << *warning;
}

TEST(ClientLimitWatch, ProcessLimitsWithinTheClientLimitAreNotWarnedAbout) {
    ClientLimitWatch watch(4096);
    // Dovecot's defaults: imap 1024, lmtp 100, pop3 1024, submission 1024.
    EXPECT_FALSE(watch.on_process_limit("imap", 1024));
    EXPECT_FALSE(watch.on_process_limit("lmtp", 100));
    EXPECT_FALSE(watch.on_process_limit("pop3", 1024));
    EXPECT_FALSE(watch.on_process_limit("submission", 1024));
    // 4096 exactly still fits.
    EXPECT_FALSE(watch.on_process_limit("doveadm", 924));
}

TEST(ClientLimitWatch, ASumPastTheClientLimitIsWarnedAboutOnceNamingEachService) {
    ClientLimitWatch watch(4096);
    EXPECT_FALSE(watch.on_process_limit("lmtp", 100));
    const std::optional<std::string> warning = watch.on_process_limit("imap", 5000);
    ASSERT_TRUE(warning);
    EXPECT_EQ(*warning,
              "service xaps { client_limit=4096 } is lower than required under max. load "
              "(5100): each mail process holds a connection to the worker while it is busy, and "
              "past client_limit the master drops new ones and the pushes they carry are lost. "
              "Counted for the services whose processes connected: service imap { "
              "process_limit=5000 } + service lmtp { process_limit=100 }. Raise service xaps { "
              "client_limit } to at least 5100 (Dovecot's fd limit, ulimit -n or LimitNOFILE, "
              "must allow as many)");
    // Every further imap and lmtp process says the same.
    EXPECT_FALSE(watch.on_process_limit("imap", 5000));
    EXPECT_FALSE(watch.on_process_limit("lmtp", 100));
    // A smaller limit heard from a service (a process started before a
    // reload) does not lower the largest one.
    EXPECT_FALSE(watch.on_process_limit("imap", 10));
}

TEST(ClientLimitWatch, AGrowingSumIsWarnedAboutAgain) {
    ClientLimitWatch watch(1000);
    const std::optional<std::string> first = watch.on_process_limit("imap", 1500);
    ASSERT_TRUE(first);
    EXPECT_EQ(first->rfind("service xaps { client_limit=1000 } is lower than required under "
                           "max. load (1500)",
                           0),
              0u)
        << *first;
    EXPECT_NE(first->find(": service imap { process_limit=1500 }. Raise"), std::string::npos)
        << *first;
    // The largest limit per service counts, not the sum of every announcement.
    EXPECT_FALSE(watch.on_process_limit("imap", 1200));
    const std::optional<std::string> grown = watch.on_process_limit("pop3", 300);
    ASSERT_TRUE(grown);
    EXPECT_NE(grown->find("max. load (1800)"), std::string::npos) << *grown;
    EXPECT_NE(grown->find(": service imap { process_limit=1500 } + service pop3 { "
                          "process_limit=300 }. Raise"),
              std::string::npos)
        << *grown;
    EXPECT_NE(grown->find("at least 1800 "), std::string::npos) << *grown;
    // A service's own limit raised (after a reload) grows the sum too.
    const std::optional<std::string> raised = watch.on_process_limit("imap", 2000);
    ASSERT_TRUE(raised);
    EXPECT_NE(raised->find("max. load (2300)"), std::string::npos) << *raised;
    EXPECT_FALSE(watch.on_process_limit("pop3", 300));
}

TEST(ClientLimitWatch, ProcessLimitsAgainstAnUnknownClientLimitAreNeverWarnedAbout) {
    ClientLimitWatch watch(0);
    EXPECT_FALSE(watch.on_process_limit("imap", 100000));
}

TEST(ClientLimitWatch, OnlyTheFirstServicesAreRemembered) {
    ClientLimitWatch watch(100);
    for (std::size_t i = 0; i < 32; ++i) {
        EXPECT_FALSE(watch.on_process_limit("service" + std::to_string(i), 3)) << i;
    }
    // 32 services of 3 are 96: a 33rd name is not counted, whatever its limit.
    EXPECT_FALSE(watch.on_process_limit("another", 1000000));
    // One already remembered still is.
    const std::optional<std::string> warning = watch.on_process_limit("service0", 10);
    ASSERT_TRUE(warning);
    EXPECT_NE(warning->find("max. load (103)"), std::string::npos) << *warning;
}

TEST(ClientLimitWatch, ProcessLimitsAndConnectionsAreWarnedAboutApart) {
    ClientLimitWatch watch(1000);
    ASSERT_TRUE(watch.on_process_limit("imap", 2000));
    // The connections' own warning still comes at 90%.
    const std::optional<std::string> warning = watch.on_accept(900);
    ASSERT_TRUE(warning);
    EXPECT_EQ(warning->rfind("900 connections open, 90%", 0), 0u) << *warning;
}

} // namespace
