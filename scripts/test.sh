#!/usr/bin/env bash
# The test command (npm test): builds, then runs every test in lanes that keep the 2 cores busy
# without two heavy parts fighting for them:
# - the unit tests and the conformance suite on SQLite (two files at a time), and beside them the
#   conformance suite on PostgreSQL (LMVM_TEST_STORE=postgres; each file starts its own throwaway
#   cluster); these start no sandboxes;
# - lane A, from the start: the multi-host tests (test/e2e/cluster.test.ts, then
#   test/hostile/cluster-faults.test.ts: simulated hosts in network namespaces and on bridges of
#   their own, their own PostgreSQL and data directories), then the end-to-end and hostile files
#   listed in LANE_A, one at a time;
# - lane B, once the unit and conformance tests are done: every other end-to-end and hostile file,
#   one at a time (a new file lands here unless it is listed elsewhere);
# - last, alone: the files in ALONE (the load test measures what the whole machine admits).
# Every end-to-end file uses a data directory, sandbox namespaces, test networks (a slot of its own:
# test/support/test-network.ts) and firewall chains of its own, and an lmvm server's CPU and
# memory room counts its own MicroVMs, so files of two lanes do not disturb each other. The lists
# balance the lanes by the files' durations in a whole run (about 22 minutes each).
# npm test repeats the hostile faults and load cycles fewer times than `npm run reliability`
# (100 cycles, 20 and 8 rounds, 200 fuzz runs), to keep the whole run well under an hour; the
# variables override them. Each lane's output is printed when it ends.
# Exits non-zero when any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
npm run build || exit 1
export LMVM_LOAD_CYCLES=${LMVM_LOAD_CYCLES:-10} LMVM_FAULT_ROUNDS=${LMVM_FAULT_ROUNDS:-6} LMVM_CLUSTER_FAULT_ROUNDS=${LMVM_CLUSTER_FAULT_ROUNDS:-3} LMVM_FUZZ_RUNS=${LMVM_FUZZ_RUNS:-100}
d=dist/test
multi=($d/e2e/cluster.test.js $d/hostile/cluster-faults.test.js)
LANE_A=(aws-cli build-deadlines build-egress build-restart cli-builds cli-logs cli-seed-workflow console egress-gateway
  execution-role gvisor kill-9 object-store os-capabilities server-shutdown warm-pool
  hostile/abuse hostile/artifacts hostile/faults hostile/proxy-traffic)
ALONE=(hostile/load)
file() { case $1 in hostile/*) echo "$d/$1.test.js" ;; *) echo "$d/e2e/$1.test.js" ;; esac; }
lane_a=() alone=()
for f in "${LANE_A[@]}"; do lane_a+=("$(file "$f")"); done
for f in "${ALONE[@]}"; do alone+=("$(file "$f")"); done
for f in "${multi[@]}" "${lane_a[@]}" "${alone[@]}"; do
  [ -f "$f" ] || { echo "scripts/test.sh names $f, which the build did not make" >&2; exit 1; }
done
lane_b=()
for f in $d/e2e/*.test.js $d/hostile/*.test.js; do
  case " ${multi[*]} ${lane_a[*]} ${alone[*]} " in *" $f "*) ;; *) lane_b+=("$f") ;; esac
done
pglog=$(mktemp) alog=$(mktemp)
trap 'rm -f "$pglog" "$alog"' EXIT
LMVM_TEST_STORE=postgres node --test --test-concurrency=2 --test-force-exit $d/conformance >"$pglog" 2>&1 &
pg=$!
node --test --test-concurrency=1 --test-force-exit "${multi[@]}" "${lane_a[@]}" >"$alog" 2>&1 &
lane=$!
node --test --test-concurrency=2 --test-force-exit $d/unit $d/conformance
u=$?
wait $pg
p=$?
echo '# the conformance suite on PostgreSQL (LMVM_TEST_STORE=postgres)'
cat "$pglog"
echo '# lane B: end-to-end and hostile files'
node --test --test-concurrency=1 --test-force-exit "${lane_b[@]}"
b=$?
wait $lane
a=$?
echo '# lane A: the multi-host tests, then end-to-end and hostile files'
cat "$alog"
echo '# alone: the load test, then the test support'
node --test --test-concurrency=1 --test-force-exit "${alone[@]}" $d/support
l=$?
echo "# unit and conformance on SQLite: exit $u; conformance on PostgreSQL: exit $p; lane A (multi-host, e2e, hostile): exit $a; lane B (e2e, hostile): exit $b; alone: exit $l"
[ $u -eq 0 ] && [ $p -eq 0 ] && [ $a -eq 0 ] && [ $b -eq 0 ] && [ $l -eq 0 ]
