// Replays every seed and every kept crash of each fuzz target through it, so
// that the fuzz targets' invariants are checked on every test run, with gcc and
// without libFuzzer. scripts/fuzz.sh does the fuzzing itself.
#include "fuzz-invariant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

// Each target's LLVMFuzzerTestOneInput, renamed at compile time (meson.build)
// so that all link into one executable.
extern "C" int fuzz_xaps_request_one_input(const std::uint8_t *data, std::size_t size);
extern "C" int fuzz_worker_protocol_one_input(const std::uint8_t *data, std::size_t size);
extern "C" int fuzz_apns_response_one_input(const std::uint8_t *data, std::size_t size);
extern "C" int fuzz_xapsd_import_one_input(const std::uint8_t *data, std::size_t size);
extern "C" int fuzz_caservice_response_one_input(const std::uint8_t *data, std::size_t size);

namespace xaps::fuzz {

namespace {

class InvariantFailure : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

} // namespace

void invariant_failed(const char *file, int line, const char *condition) {
    throw InvariantFailure(std::string(file) + ":" + std::to_string(line) +
                           ": fuzz invariant failed: " + condition);
}

} // namespace xaps::fuzz

namespace {

namespace fs = std::filesystem;

using FuzzTarget = int (*)(const std::uint8_t *, std::size_t);

const fs::path fuzz_dir = XAPS_FUZZ_DIR;

// The target's seed corpus and kept crash inputs, in a stable order.
std::vector<fs::path> inputs_of(const std::string &target) {
    std::vector<fs::path> inputs;
    for (const char *kind : {"corpus", "regressions"}) {
        fs::path dir = fuzz_dir / kind / target;
        if (!fs::is_directory(dir)) {
            continue;
        }
        for (const fs::directory_entry &entry : fs::directory_iterator(dir)) {
            if (entry.is_regular_file()) {
                inputs.push_back(entry.path());
            }
        }
    }
    std::ranges::sort(inputs);
    return inputs;
}

std::vector<std::uint8_t> read_file(const fs::path &path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void replay_all(const std::string &target, FuzzTarget run_one) {
    std::vector<fs::path> inputs = inputs_of(target);
    // A wrong path must not pass as "nothing to replay".
    ASSERT_FALSE(inputs.empty()) << "no seed corpus under " << (fuzz_dir / "corpus" / target);
    for (const fs::path &input : inputs) {
        SCOPED_TRACE(input.lexically_relative(fuzz_dir).string());
        std::vector<std::uint8_t> bytes = read_file(input);
        try {
            EXPECT_EQ(run_one(bytes.data(), bytes.size()), 0);
        } catch (const std::exception &error) {
            ADD_FAILURE() << error.what();
        } catch (...) {
            ADD_FAILURE() << "a non-standard exception escaped";
        }
    }
}

TEST(FuzzRegressions, XapsRequest) {
    replay_all("fuzz-xaps-request", fuzz_xaps_request_one_input);
}

TEST(FuzzRegressions, WorkerProtocol) {
    replay_all("fuzz-worker-protocol", fuzz_worker_protocol_one_input);
}

TEST(FuzzRegressions, ApnsResponse) {
    replay_all("fuzz-apns-response", fuzz_apns_response_one_input);
}

TEST(FuzzRegressions, XapsdImport) {
    replay_all("fuzz-xapsd-import", fuzz_xapsd_import_one_input);
}

TEST(FuzzRegressions, CaserviceResponse) {
    replay_all("fuzz-caservice-response", fuzz_caservice_response_one_input);
}

} // namespace
