#!/usr/bin/env bash
# Runs the default test suite once per numerics setting of tests/conftest.py on this machine:
# 1 and 2 torch threads (SEMISUP_TEST_THREADS) x fp32 and bf16 for train.precision=auto
# (SEMISUP_TEST_PRECISION). A test that passes under one setting and fails under another depends
# on rounding. Arguments go to pytest; THREADS and PRECISIONS narrow the matrix:
#
#   bash benchmarks/run_test_matrix.sh                          # 4 runs of `python -m pytest`
#   THREADS=2 PRECISIONS=bf16 bash benchmarks/run_test_matrix.sh -x tests/algorithms
#
# Exits 1 if any run failed, after printing every run's last line.
set -u
cd "$(dirname "$0")/.."
results=()
status=0
for threads in ${THREADS:-1 2}; do
  for precision in ${PRECISIONS:-fp32 bf16}; do
    setting="SEMISUP_TEST_THREADS=$threads SEMISUP_TEST_PRECISION=$precision"
    echo "=== $setting python -m pytest $*"
    log=$(mktemp)
    SEMISUP_TEST_THREADS=$threads SEMISUP_TEST_PRECISION=$precision \
      python -m pytest "$@" 2>&1 | tee "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    results+=("$setting: $(tail -n 1 "$log")")
    rm -f "$log"
  done
done
echo "=== summary"
printf '%s\n' "${results[@]}"
exit $status
