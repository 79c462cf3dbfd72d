#include "bench-report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace xaps::bench {

namespace {

const auto started = std::chrono::steady_clock::now();

std::string_view verdict_name(Verdict verdict) {
    switch (verdict) {
    case Verdict::met:
        return "met";
    case Verdict::missed:
        return "MISSED";
    case Verdict::info:
        break;
    }
    return "-";
}

} // namespace

Verdict at_least(double value, double target) {
    return value >= target ? Verdict::met : Verdict::missed;
}

Verdict at_most(double value, double target) {
    return value <= target ? Verdict::met : Verdict::missed;
}

std::string fixed(double value, int digits) {
    char text[64];
    std::snprintf(text, sizeof(text), "%.*f", digits, value);
    return text;
}

void report(std::string_view figure, std::string_view metric, double value, std::string_view unit,
            std::string_view target, Verdict verdict) {
    const int digits = std::fabs(value) >= 100 ? 0 : std::fabs(value) >= 10 ? 1 : 2;
    std::cout << "XAPS-BENCH\t" << figure << '\t' << metric << '\t' << fixed(value, digits) << '\t'
              << unit << '\t' << (target.empty() ? "-" : target) << '\t' << verdict_name(verdict)
              << std::endl;
}

void report_failure(std::string_view figure, std::string_view metric, std::string_view why) {
    std::cout << "XAPS-BENCH\t" << figure << '\t' << metric << "\tn/a\t-\t-\tFAILED: " << why
              << std::endl;
}

void progress(const std::string &text) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::fprintf(stderr, "[%7.1fs] %s\n", seconds, text.c_str());
}

double percentile(std::vector<double> values, double fraction) {
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const double rank = std::ceil(std::clamp(fraction, 0.0, 1.0) * values.size());
    const auto index = static_cast<std::size_t>(std::max(rank, 1.0)) - 1;
    return values[std::min(index, values.size() - 1)];
}

double median(std::vector<double> values) {
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const std::size_t middle = values.size() / 2;
    return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

std::string describe_distribution(const std::vector<double> &values, std::string_view unit) {
    const std::string suffix = " " + std::string(unit);
    return "p50 " + fixed(percentile(values, 0.5), 2) + suffix + ", p99 " +
           fixed(percentile(values, 0.99), 2) + suffix + ", max " +
           fixed(percentile(values, 1.0), 2) + suffix + " (n=" + std::to_string(values.size()) +
           ")";
}

} // namespace xaps::bench
