#!/bin/sh
# Prints the sanitizer reports found in DIR (one file each, as log_path
# writes them) and exits 1 if there are any; removes DIR when it is empty.
# Used by scripts/sanitize.sh and scripts/thread-sanitize.sh.
#
# Usage: scripts/sanitizer-reports.sh DIR NAME    (NAME prefixes the summary)
set -eu
reports=$1
name=$2
found=$(find "$reports" -type f | sort)
if [ -z "$found" ]; then
  echo "$name: no sanitizer reports"
  rmdir "$reports"
  exit 0
fi
for report in $found; do
  echo "--- sanitizer report $report"
  head -n 80 "$report"
done
echo "$name: $(echo "$found" | wc -l) sanitizer report(s) in $reports"
exit 1
