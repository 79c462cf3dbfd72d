#!/usr/bin/env python3
"""Copies the entries of meson test logs (one JSON object a line) into one
log whose test names carry a prefix, e.g. "asan/test-e2e-push", so that
scripts/count-tests.py counts a second run of the same suites (the sanitizer
build) as tests of their own. A non-zero status of the run with every entry
passing (a sanitizer report, a build failure) becomes one failed entry.

usage: prefix-testlog.py PREFIX STATUS OUTPUT INPUT..."""
import json
import sys


def main(prefix, status, output_path, input_paths):
    entries = []
    for path in input_paths:
        try:
            with open(path, encoding="utf-8") as log:
                for line in log:
                    if line.strip():
                        entry = json.loads(line)
                        name = entry["name"].rsplit(" / ", 1)[-1]
                        entries.append({"name": f"{prefix}/{name}", "result": entry["result"]})
        except FileNotFoundError:
            entries.append({"name": f"{prefix}/{path}", "result": "FAIL"})
    if status != "0" and all(entry["result"] in ("OK", "EXPECTEDFAIL") for entry in entries):
        entries.append({"name": f"{prefix}/run", "result": "FAIL"})
    with open(output_path, "w", encoding="utf-8") as log:
        for entry in entries:
            log.write(json.dumps(entry) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
