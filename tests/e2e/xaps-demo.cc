// xaps-demo: the whole push path on one screen. Starts the mock APNs server
// (in this process), a real Dovecot with the xaps plugin and worker, lets a
// simulated iPhone log in and register over IMAP, delivers a mail over LMTP,
// and prints every step with a timestamp until the push reaches "Apple".
// Exits 0 when the push arrived as iOS expects it, non-zero otherwise.
#include "e2e-environment.h"
#include "imap-client.h"
#include "ios-mailbox-hash.h"
#include "lmtp-client.h"
#include "worker-client.h"

#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

namespace {

using namespace xaps::test;
using Clock = std::chrono::steady_clock;

const Clock::time_point demo_start = Clock::now();

double seconds_since(Clock::time_point start, Clock::time_point when = Clock::now()) {
    return std::chrono::duration<double>(when - start).count();
}

// "[  0.012s] iPhone  -> IMAP    a1 LOGIN ..."
void trace(std::string_view from, std::string_view arrow, std::string_view to,
           std::string_view text) {
    std::printf("[%7.3fs] %-7.*s %.*s %-7.*s %.*s\n", seconds_since(demo_start),
                static_cast<int>(from.size()), from.data(), static_cast<int>(arrow.size()),
                arrow.data(), static_cast<int>(to.size()), to.data(), static_cast<int>(text.size()),
                text.data());
    std::fflush(stdout);
}

void note(std::string_view text) {
    trace("demo", "  ", "", text);
}

// A trace hook showing a client's side of a conversation.
TraceFunction conversation(std::string client, std::string server) {
    return [client, server](TraceDirection direction, std::string_view line) {
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
            line.remove_suffix(1);
        }
        if (direction == TraceDirection::to_server) {
            trace(client, "->", server, line);
        } else {
            trace(server, "->", client, line);
        }
    };
}

std::string header(const MockApnsRequest &request, const std::string &name) {
    auto found = request.headers.find(name);
    return found == request.headers.end() ? "(missing)" : found->second;
}

int report_failure(const std::string &step, const std::string &why,
                   const DovecotInstance *dovecot) {
    std::fprintf(stderr, "\nxaps-demo FAILED while %s:\n  %s\n", step.c_str(), why.c_str());
    if (dovecot != nullptr) {
        std::fprintf(stderr, "\n--- Dovecot's log (%s) ---\n%s", dovecot->log_path().c_str(),
                     dovecot->log().c_str());
    }
    return 1;
}

int run_demo() {
    const std::string topic = e2e::apns_topic();
    std::string step = "starting the mock APNs server";
    std::unique_ptr<DovecotInstance> dovecot;
    try {
        MockApnsServer apns(e2e::mock_apns_config());
        apns.start();
        note("mock APNs listening on 127.0.0.1:" + std::to_string(apns.port()) +
             " (TLS + HTTP/2, client certificate required)");

        step = "starting Dovecot";
        dovecot = std::make_unique<DovecotInstance>(e2e::dovecot_options(apns.port()));
        dovecot->start();
        note("Dovecot running from " + dovecot->dir() + ": IMAP on port " +
             std::to_string(dovecot->imap_port()) + ", LMTP on port " +
             std::to_string(dovecot->lmtp_port()) + ", xaps worker answering on " +
             dovecot->worker_socket_path());

        step = "connecting the iPhone over IMAP";
        ImapClient iphone(dovecot->imap_port());
        trace("IMAP", "->", "iPhone", iphone.greeting());
        iphone.set_trace(conversation("iPhone", "IMAP"));

        step = "logging in";
        if (iphone.capabilities().contains("XAPPLEPUSHSERVICE")) {
            throw std::runtime_error("XAPPLEPUSHSERVICE advertised before login");
        }
        note("no XAPPLEPUSHSERVICE before login, as it should be");
        ImapResponse login = iphone.login("alice", DovecotInstance::password);
        if (!login.ok()) {
            throw std::runtime_error("login refused: " + login.tagged);
        }
        if (!iphone.capabilities().contains("XAPPLEPUSHSERVICE")) {
            throw std::runtime_error("XAPPLEPUSHSERVICE missing from CAPABILITY after login");
        }
        note("XAPPLEPUSHSERVICE offered: iOS Mail would now switch this account to Push");

        step = "registering the iPhone for push";
        ImapResponse registration = iphone.command(e2e::xapplepushservice_command());
        if (!registration.ok()) {
            throw std::runtime_error("registration refused: " + registration.tagged);
        }
        const std::string topic_line =
            R"(* XAPPLEPUSHSERVICE "aps-version" "2" "aps-topic" ")" + topic + "\"";
        bool topic_seen = false;
        for (const auto &line : registration.untagged) {
            topic_seen = topic_seen || line == topic_line;
        }
        if (!topic_seen) {
            throw std::runtime_error("the reply lacks: " + topic_line);
        }

        step = "looking up the registration in the worker's store";
        for (const auto &reg : WorkerClient(dovecot->admin_socket_path()).list("alice")) {
            std::string mailboxes;
            for (const auto &mailbox : reg.mailboxes) {
                mailboxes += (mailboxes.empty() ? "" : ", ") + mailbox;
            }
            trace("Worker", "->", "demo",
                  "LIST: user=" + reg.user + " account-id=" + reg.account_id + " token=" +
                      reg.device_token.substr(0, 8) + "... mailboxes=[" + mailboxes + "]");
        }

        step = "delivering a mail to alice over LMTP";
        Clock::time_point data_sent{};
        {
            LmtpClient mta(dovecot->lmtp_port());
            mta.set_trace([&data_sent, lmtp_trace = conversation("MTA", "LMTP")](
                              TraceDirection direction, std::string_view line) {
                if (direction == TraceDirection::to_server && line.starts_with("<message")) {
                    data_sent = Clock::now();
                    trace("MTA", "->", "LMTP", "(mail for alice)");
                    return;
                }
                lmtp_trace(direction, line);
            });
            SmtpReply delivery = mta.deliver(
                "sender@example.net", "alice@example.com",
                make_test_message("sender@example.net", "alice@example.com", "Hello from xaps-demo",
                                  "If your phone were real, it would be fetching "
                                  "this now.\n"));
            if (delivery.code != 250) {
                throw std::runtime_error("delivery refused: " + delivery.text());
            }
        }

        step = "waiting for the push at the mock APNs";
        if (!apns.wait_for_requests(1, std::chrono::seconds(10))) {
            throw std::runtime_error("no push reached the mock APNs within 10 s");
        }
        const MockApnsRequest push = apns.requests().front();
        double latency_ms = 1000 * seconds_since(data_sent, push.received);
        char latency[64];
        std::snprintf(latency, sizeof(latency), "  (push arrived %.1f ms after delivery)",
                      latency_ms);
        trace("APNs", "<-", "Worker",
              push.method + " " + push.path + " apns-topic=" + header(push, "apns-topic") +
                  " apns-push-type=" + header(push, "apns-push-type") + " body=" + push.body +
                  latency);
        trace("APNs", "  ", "", "client certificate UID=" + push.client_uid);
        if (push.path != std::string("/3/device/") + e2e::iphone_device_token ||
            header(push, "apns-topic") != topic) {
            throw std::runtime_error("the push does not address the registered device and topic");
        }
        const std::string inbox_hash = xaps::test::ios_mailbox_hash("INBOX");
        if (push.account_id != e2e::iphone_account_id || !push.mailbox_hashes ||
            *push.mailbox_hashes != std::vector<std::string>{inbox_hash}) {
            throw std::runtime_error("the push does not name the account and INBOX as iOS "
                                     "expects: " +
                                     push.body);
        }
        note("m = [" + inbox_hash +
             "]: MD5 of \"INBOX\" as echoed, the mailbox that changed; iOS Mail fetches it");

        step = "letting the iPhone fetch";
        iphone.command("STATUS INBOX (MESSAGES UNSEEN)");
        iphone.command("LOGOUT");

        step = "stopping Dovecot";
        dovecot->stop();
        if (auto problems = dovecot->log_problems(); !problems.empty()) {
            throw std::runtime_error("Dovecot logged: " + problems.front());
        }
        note("done: registration stored, mail delivered, push sent. Dovecot's log is clean.");
        return 0;
    } catch (const std::exception &error) {
        return report_failure(step, error.what(), dovecot.get());
    }
}

} // namespace

int main() {
    if (::geteuid() != 0) {
        std::fprintf(stderr, "xaps-demo runs a real Dovecot and creates the users vmail and "
                             "xaps: run it as root.\n");
        return 2;
    }
    return run_demo();
}
