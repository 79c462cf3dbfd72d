#!/usr/bin/env python3
"""Turns scripts/fuzz.sh's summary lines ("fuzz: <target>: ok, ..." or
"fuzz: <target>: FAILED ...") into a meson-style test log (one JSON object a
line), so that scripts/count-tests.py counts each fuzz target as a test.
A run that printed no summary at all (it could not build) is one failure."""
import json
import re
import sys

SUMMARY = re.compile(r"^fuzz: (fuzz-[\w-]+): (ok|FAILED)\b")


def main(output_path, log_path):
    entries = []
    with open(output_path, encoding="utf-8", errors="replace") as output:
        for line in output:
            match = SUMMARY.match(line)
            if match:
                entries.append({"name": match.group(1),
                                "result": "OK" if match.group(2) == "ok" else "FAIL"})
    if not entries:
        entries.append({"name": "fuzz", "result": "FAIL"})
    with open(log_path, "w", encoding="utf-8") as log:
        for entry in entries:
            log.write(json.dumps(entry) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
