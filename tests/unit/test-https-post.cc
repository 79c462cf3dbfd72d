// https_post against a real TLS server on 127.0.0.1 (the certificate
// service simulator answering verbatim).
#include "https-post.h"

#include "mock-caservice-server.h"
#include "xaps-error.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace xaps {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

const std::string pki = XAPS_TEST_PKI_DIR;

class HttpsPostTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = (fs::temp_directory_path() / "xaps-https-post-XXXXXX").string();
        ASSERT_NE(::mkdtemp(dir_.data()), nullptr);
        // Any certificate will do as the vendor chain: answers are scripted.
        test::MockCaServiceConfig config;
        config.cert_file = pki + "/server.pem";
        config.key_file = pki + "/server.key";
        config.issuer_cert_file = pki + "/ca.pem";
        config.issuer_key_file = pki + "/ca.key";
        config.vendor_chain_file = pki + "/client.pem";
        server_ = std::make_unique<test::MockCaServiceServer>(config);
        server_->start();
        request_.url = "https://127.0.0.1:" + std::to_string(server_->port()) + "/anything";
        request_.ca_file = pki + "/ca.pem";
        request_.timeout = 10s;
    }
    void TearDown() override {
        server_.reset();
        fs::remove_all(dir_);
    }

    std::string dir_;
    std::unique_ptr<test::MockCaServiceServer> server_;
    HttpsPostRequest request_;
};

TEST_F(HttpsPostTest, PostsTheBodyAndReturnsStatusAndAnswer) {
    server_->set_raw_answer(test::MockHttpAnswer{418, "short and stout", false});
    request_.body = std::string(100 * 1024, 'b');
    request_.headers = {"Content-Type: text/x-xml-plist", "X-Test: yes"};

    HttpsPostResponse response = https_post(request_);

    EXPECT_EQ(response.status, 418);
    EXPECT_EQ(response.body, "short and stout");
    auto requests = server_->requests();
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_EQ(requests[0].method, "POST");
    EXPECT_EQ(requests[0].path, "/anything");
    EXPECT_EQ(requests[0].body, request_.body);
    EXPECT_EQ(requests[0].headers.at("content-type"), "text/x-xml-plist");
    EXPECT_EQ(requests[0].headers.at("x-test"), "yes");
    EXPECT_EQ(requests[0].headers.count("expect"), 0u) << "no 100-continue round trip";
}

TEST_F(HttpsPostTest, AnswerIsBounded) {
    request_.max_response_bytes = 1000;
    const struct {
        const char *name;
        std::size_t size;
        bool chunked;
        bool accepted;
    } rows[] = {
        {"at the limit", 1000, false, true},
        {"at the limit, chunked", 1000, true, true},
        {"one byte over", 1001, false, false},
        {"one byte over, chunked", 1001, true, false},
        {"far over, chunked", 4 * 1024 * 1024, true, false},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        server_->set_raw_answer(test::MockHttpAnswer{200, std::string(row.size, 'x'), row.chunked});
        if (row.accepted) {
            EXPECT_EQ(https_post(request_).body.size(), row.size);
            continue;
        }
        try {
            https_post(request_);
            FAIL() << "expected the answer to be refused";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
            EXPECT_THAT(e.what(), HasSubstr("larger than 1000 bytes"));
        }
    }
}

TEST_F(HttpsPostTest, NoAnswerIsUnavailable) {
    // A port nobody listens on: bound, never listened to, so nothing else takes it.
    int reserved = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    ASSERT_EQ(::bind(reserved, reinterpret_cast<sockaddr *>(&address), sizeof(address)), 0);
    ASSERT_EQ(::getsockname(reserved, reinterpret_cast<sockaddr *>(&address), &length), 0);
    std::string closed_url = "https://127.0.0.1:" + std::to_string(ntohs(address.sin_port)) + "/";

    const struct {
        const char *name;
        std::function<void(HttpsPostRequest &)> change;
    } rows[] = {
        {"connection refused", [&](HttpsPostRequest &r) { r.url = closed_url; }},
        {"untrusted server", [](HttpsPostRequest &r) { r.ca_file = pki + "/untrusted-ca.pem"; }},
        {"not https", [](HttpsPostRequest &r) { r.url.replace(0, 5, "http"); }},
        {"timeout",
         [this](HttpsPostRequest &r) {
             server_->set_answer_delay(5s);
             r.timeout = 200ms;
         }},
    };
    for (const auto &row : rows) {
        SCOPED_TRACE(row.name);
        HttpsPostRequest request = request_;
        row.change(request);
        auto started = std::chrono::steady_clock::now();
        try {
            https_post(request);
            FAIL() << "expected no answer";
        } catch (const Error &e) {
            EXPECT_EQ(e.kind(), ErrorKind::unavailable);
            EXPECT_THAT(e.what(), HasSubstr(request.url));
        }
        EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
    }
    ::close(reserved);
}

} // namespace
} // namespace xaps
