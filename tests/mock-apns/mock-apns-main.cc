// mock-apns: the mock APNs server as a program, for the demo and the
// benchmarks. Answers every request APNs would accept the same way and
// prints one line for each until SIGTERM or SIGINT.
#include "mock-apns-server.h"

#include <signal.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <mutex>
#include <string>
#include <string_view>

namespace {

struct Options {
    xaps::test::MockApnsConfig config;
    xaps::test::MockApnsResponse response;
    bool quiet = false;
};

[[noreturn]] void usage(const char *message) {
    std::fprintf(stderr,
                 "mock-apns: %s\n"
                 "usage: mock-apns --cert FILE --key FILE [--port N] [--client-ca FILE]\n"
                 "                 [--max-streams N] [--status CODE[:REASON]] [--delay-ms N]"
                 " [--quiet]\n"
                 "                 [--token-key FILE --key-id ID --team-id ID --topic TOPIC...]\n",
                 message);
    std::exit(2);
}

template <typename Number> Number parse_number(std::string_view text, const char *option) {
    Number value{};
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size())
        usage((std::string("bad number for ") + option).c_str());
    return value;
}

Options parse_options(int argc, char **argv) {
    Options options;
    options.config.record_requests = false;
    const auto token_auth = [&options]() -> xaps::test::MockApnsTokenAuth & {
        if (!options.config.token_auth)
            options.config.token_auth.emplace();
        return *options.config.token_auth;
    };
    for (int i = 1; i < argc; ++i) {
        const std::string_view option = argv[i];
        if (option == "--quiet") {
            options.quiet = true;
            continue;
        }
        if (i + 1 >= argc)
            usage((std::string("missing value for ") + argv[i]).c_str());
        const std::string_view value = argv[++i];
        if (option == "--port") {
            options.config.port = parse_number<uint16_t>(value, argv[i - 1]);
        } else if (option == "--cert") {
            options.config.cert_file = value;
        } else if (option == "--key") {
            options.config.key_file = value;
        } else if (option == "--client-ca") {
            options.config.client_ca_file = value;
        } else if (option == "--max-streams") {
            options.config.max_concurrent_streams = parse_number<uint32_t>(value, argv[i - 1]);
        } else if (option == "--status") {
            const size_t colon = value.find(':');
            options.response.status = parse_number<int>(value.substr(0, colon), argv[i - 1]);
            if (colon != std::string_view::npos)
                options.response.reason = value.substr(colon + 1);
        } else if (option == "--token-key") {
            token_auth().key_file = value;
        } else if (option == "--key-id") {
            token_auth().key_id = value;
        } else if (option == "--team-id") {
            token_auth().team_id = value;
        } else if (option == "--topic") {
            token_auth().topics.emplace_back(value);
        } else if (option == "--delay-ms") {
            options.response.delay =
                std::chrono::milliseconds(parse_number<uint32_t>(value, argv[i - 1]));
        } else {
            usage((std::string("unknown option ") + argv[i - 1]).c_str());
        }
    }
    if (options.config.cert_file.empty() || options.config.key_file.empty())
        usage("--cert and --key are required");
    if (options.config.token_auth &&
        (options.config.token_auth->key_file.empty() || options.config.token_auth->key_id.empty() ||
         options.config.token_auth->team_id.empty() || options.config.token_auth->topics.empty()))
        usage("token auth needs --token-key, --key-id, --team-id and --topic");
    return options;
}

std::string describe(const xaps::test::MockApnsRequest &request, int status) {
    std::string line = "mock-apns: " + request.method + " " + request.path;
    for (const char *name : {"apns-topic", "apns-push-type", "apns-expiration", "apns-priority",
                             "apns-id", "apns-collapse-id"}) {
        const auto found = request.headers.find(name);
        if (found != request.headers.end())
            line += std::string(" ") + name + "=" + found->second;
    }
    const auto authorization = request.headers.find("authorization");
    if (authorization != request.headers.end()) // a JWT: its first characters are enough
        line += " authorization=" + authorization->second.substr(0, 16) + "...";
    line += " body=" + request.body + " -> " + std::to_string(status);
    return line;
}

} // namespace

int main(int argc, char **argv) {
    const Options options = parse_options(argc, argv);

    // Blocked before the server thread starts so that it inherits the mask and
    // sigwait() below is the only receiver.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    signal(SIGPIPE, SIG_IGN);

    try {
        xaps::test::MockApnsServer server(options.config);
        std::mutex output_mutex;
        server.set_responder([&](const xaps::test::MockApnsRequest &request) {
            if (!options.quiet) {
                const std::string line = describe(request, options.response.status);
                std::lock_guard lock(output_mutex);
                std::cout << line << std::endl;
            }
            return options.response;
        });
        server.start();
        {
            std::lock_guard lock(output_mutex);
            std::cout << "mock-apns: listening on 127.0.0.1:" << server.port() << std::endl;
        }
        int signal_number = 0;
        sigwait(&stop_signals, &signal_number);
        server.stop();
        if (!options.quiet)
            std::cout << "mock-apns: stopped after " << server.requests_received()
                      << " requests, and " << server.requests_refused() << " refused as APNs would"
                      << std::endl;
    } catch (const std::exception &error) {
        std::fprintf(stderr, "mock-apns: %s\n", error.what());
        return 1;
    }
    return 0;
}
