// How a benchmark reports: progress on stderr for the person watching, and
// one machine-readable line per figure on stdout, which scripts/bench.sh
// gathers into the final table:
//   XAPS-BENCH <TAB> figure <TAB> metric <TAB> value <TAB> unit <TAB> target <TAB> verdict
// Also the statistics every benchmark uses (medians, percentiles).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace xaps::bench {

enum class Verdict { met, missed, info };

Verdict at_least(double value, double target);
Verdict at_most(double value, double target);

// One figure. `target` is free text such as ">= 70%"; empty for information.
void report(std::string_view figure, std::string_view metric, double value, std::string_view unit,
            std::string_view target = {}, Verdict verdict = Verdict::info);
// A figure that could not be measured, with the reason.
void report_failure(std::string_view figure, std::string_view metric, std::string_view why);

// "[  12.3s] <text>" on stderr.
void progress(const std::string &text);

// Nearest-rank percentile of the values (fraction in [0, 1]); 0 when empty.
double percentile(std::vector<double> values, double fraction);
double median(std::vector<double> values);
// "p50 1.23 p99 4.56 max 7.89 (n=100)" for a progress line.
std::string describe_distribution(const std::vector<double> &values, std::string_view unit);
// Fixed-point with `digits` decimals.
std::string fixed(double value, int digits = 1);

} // namespace xaps::bench
