#!/usr/bin/env bash
# The test command (npm test): builds, then runs
# - the unit tests and the conformance suite on SQLite (two files at a time), and beside them the
#   conformance suite on PostgreSQL (LMVM_TEST_STORE=postgres; each file starts its own throwaway
#   cluster), whose output is printed after;
# - then the end-to-end and hostile suites, one file at a time (they run real sandboxes and builds).
# Exits non-zero when any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
npm run build || exit 1
pglog=$(mktemp)
LMVM_TEST_STORE=postgres node --test --test-concurrency=2 --test-force-exit dist/test/conformance >"$pglog" 2>&1 &
pg=$!
node --test --test-concurrency=2 --test-force-exit dist/test/unit dist/test/conformance
a=$?
wait $pg
p=$?
echo '# the conformance suite on PostgreSQL (LMVM_TEST_STORE=postgres)'
cat "$pglog"
rm -f "$pglog"
# Fewer repetitions than `npm run reliability` (100 cycles, 20 and 8 rounds), to keep the whole run under an hour.
LMVM_LOAD_CYCLES=${LMVM_LOAD_CYCLES:-20} LMVM_FAULT_ROUNDS=${LMVM_FAULT_ROUNDS:-10} LMVM_CLUSTER_FAULT_ROUNDS=${LMVM_CLUSTER_FAULT_ROUNDS:-4} node --test --test-concurrency=1 --test-force-exit dist/test/e2e dist/test/hostile dist/test/support
b=$?
echo "# unit and conformance on SQLite: exit $a; conformance on PostgreSQL: exit $p; e2e and hostile: exit $b"
[ $a -eq 0 ] && [ $p -eq 0 ] && [ $b -eq 0 ]
