#!/usr/bin/env bash
# The whole pytest suite, three times in a row, while another process keeps one core busy
# (`make test-stress`). Proves the suite needs no quiet machine: no run may fail, and no
# rerun plugin is used. Prints each run's result and time; exits non-zero if any run failed.
#
# Usage: scripts/stress.sh PYTEST [PYTEST ARGS...]   (RUNS=3 by default)
set -euo pipefail

pytest_bin="$1"
shift
runs="${RUNS:-3}"

# a Python busy loop: present wherever the suite runs (stress-ng --cpu 1 does the same)
python3 -c 'while True: pass' &
hog=$!
trap 'kill "$hog" 2>/dev/null || true' EXIT

failed=0
summary=()
for run in $(seq 1 "$runs"); do
    printf '>> run %d of %d, one core held by pid %d\n' "$run" "$runs" "$hog"
    start=$SECONDS
    if "$pytest_bin" -p no:cacheprovider -q "$@"; then result=passed; else result=FAILED; failed=1; fi
    summary+=("run $run: $result in $((SECONDS - start)) s")
done
printf '%s\n' ">> loaded runs (one core busy):" "${summary[@]}"
exit "$failed"
