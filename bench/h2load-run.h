// Runs h2load (nghttp2's HTTP/2 load generator, Debian's nghttp2-client)
// against the mock APNs server: the reference for how fast pushes can go
// over the same number of connections and streams. h2load 1.52 has no
// option for a TLS client certificate, so the mock must not require one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xaps::bench {

struct H2loadOptions {
    std::uint16_t port = 0;
    std::string path;                 // e.g. "/3/device/<token>"
    std::string body_file;            // POSTed with every request
    std::vector<std::string> headers; // "name: value"
    std::size_t requests = 10000;
    unsigned connections = 1;
    unsigned streams = 100; // max concurrent streams per connection (-m)
};

struct H2loadResult {
    double requests_per_second = 0; // as h2load reports it: done / total time
    std::size_t succeeded = 0;
    std::size_t failed = 0;
    std::string output; // everything h2load printed
};

bool h2load_installed();
// Throws xaps::Error(unavailable) when h2load cannot run or reports nothing.
H2loadResult run_h2load(const H2loadOptions &options);

} // namespace xaps::bench
