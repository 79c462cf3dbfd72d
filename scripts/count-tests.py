#!/usr/bin/env python3
"""Counts the test cases of the last `meson test` run in a build directory.

Prints "N passed, M failed" as its last line and exits 1 if any failed or
none ran. A GoogleTest executable counts as its individual test cases (from
the XML report meson has it write); one that crashed, timed out or failed
without a failing case in its report counts as one failed test. Any other
test counts as one. With --clean, removes the GoogleTest XML reports left
by an earlier run instead. With --extra-log, also counts the entries of
another meson test log (such as scripts/package-test.sh's, which adds one
failed entry for each of its own steps that failed); a missing one counts as
one failed test. With --cases-log, also writes every counted case as one entry of
a meson-style test log (one JSON object a line), so that a run inside another
root (scripts/trixie.sh) can be counted case by case on the host.
"""

import argparse
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

PASSING_RESULTS = {"OK", "EXPECTEDFAIL"}
SKIPPED_RESULTS = {"SKIP"}


def introspect_tests(build_dir):
    output = subprocess.run(
        ["meson", "introspect", "--tests", build_dir],
        check=True, capture_output=True, text=True).stdout
    return {test["name"]: test for test in json.loads(output)}


def gtest_report_path(build_dir, test):
    # meson passes --gtest_output=xml:<name>.xml, relative to the test's
    # working directory (the build directory unless the test sets one).
    return os.path.join(test.get("workdir") or build_dir, test["name"] + ".xml")


def gtest_cases(report_path):
    """Yields (name, result) for each case of a GoogleTest XML report."""
    for case in ET.parse(report_path).getroot().iter("testcase"):
        name = f"{case.get('classname')}.{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            yield name, "FAIL"
        elif (case.get("status") == "notrun" or case.get("result") == "skipped"
              or case.find("skipped") is not None):
            yield name, "SKIP"
        else:
            yield name, "OK"


def last_run_results(build_dir):
    return read_testlog(os.path.join(build_dir, "meson-logs", "testlog.json"))


def read_testlog(path):
    results = []
    with open(path, encoding="utf-8") as log:
        for line in log:
            if line.strip():
                entry = json.loads(line)
                # "project:suite / name" when suites are shown, else "name".
                name = entry["name"].rsplit(" / ", 1)[-1]
                results.append((name, entry["result"]))
    return results


def main(argv):
    parser = argparse.ArgumentParser(description="Counts the test cases of a meson test run.")
    parser.add_argument("build_dir", nargs="?", default="build")
    parser.add_argument("--clean", action="store_true")
    parser.add_argument("--extra-log", action="append", default=[], metavar="JSON")
    parser.add_argument("--cases-log", metavar="JSON")
    options = parser.parse_args(argv)
    build_dir = options.build_dir
    tests = introspect_tests(build_dir)

    if options.clean:
        for test in tests.values():
            if test.get("protocol") == "gtest":
                try:
                    os.remove(gtest_report_path(build_dir, test))
                except FileNotFoundError:
                    pass
        return 0

    cases = []  # (name, "OK" | "FAIL" | "SKIP")
    results = last_run_results(build_dir)
    for path in options.extra_log:
        if os.path.exists(path):
            results += read_testlog(path)
        else:
            print(f"{path}: missing", file=sys.stderr)
            cases.append((path, "FAIL"))
    for name, result in results:
        test = tests.get(name, {})
        report = gtest_report_path(build_dir, test) if test else None
        if test.get("protocol") == "gtest" and report and os.path.exists(report):
            test_cases = [(f"{name}/{case}", case_result)
                          for case, case_result in gtest_cases(report)]
            if (result not in PASSING_RESULTS | SKIPPED_RESULTS
                    and all(case_result != "FAIL" for _, case_result in test_cases)):
                print(f"{name}: {result} outside its test cases", file=sys.stderr)
                test_cases.append((name, "FAIL"))
            cases += test_cases
        elif result in PASSING_RESULTS:
            cases.append((name, "OK"))
        elif result in SKIPPED_RESULTS:
            cases.append((name, "SKIP"))
        else:
            print(f"{name}: {result}", file=sys.stderr)
            cases.append((name, "FAIL"))

    if options.cases_log:
        with open(options.cases_log, "w", encoding="utf-8") as log:
            for name, result in cases:
                log.write(json.dumps({"name": name, "result": result}) + "\n")
    passed = sum(1 for _, result in cases if result == "OK")
    failed = sum(1 for _, result in cases if result == "FAIL")
    skipped = sum(1 for _, result in cases if result == "SKIP")

    if skipped:
        print(f"{skipped} skipped")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
