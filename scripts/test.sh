#!/usr/bin/env bash
# The test command (npm test): builds, then runs
# - the unit tests and the conformance suite on SQLite (two files at a time), and beside them the
#   conformance suite on PostgreSQL (LMVM_TEST_STORE=postgres; each file starts its own throwaway
#   cluster) and the multi-host tests (test/e2e/cluster.test.ts, then
#   test/hostile/cluster-faults.test.ts: simulated hosts in network namespaces and on bridges of
#   their own, their own PostgreSQL and data directories, so they disturb nothing else), whose
#   output is printed after;
# - once the unit and conformance tests on SQLite end (the other two lanes go on), the light
#   end-to-end files, one at a time: CLI, IAM, audit and fuzzing files, and a few short workflows
#   with a MicroVM or a build or two (their servers count only their own MicroVMs);
# - then the other end-to-end and hostile tests, one file at a time (they run real sandboxes and
#   builds, and their capacity checks assume the machine to themselves).
# npm test repeats the hostile faults and load cycles fewer times than `npm run reliability`
# (100 cycles, 20 and 8 rounds, 200 fuzz runs), to keep the whole run under an hour; the variables
# override them.
# Exits non-zero when any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
npm run build || exit 1
export LMVM_LOAD_CYCLES=${LMVM_LOAD_CYCLES:-10} LMVM_FAULT_ROUNDS=${LMVM_FAULT_ROUNDS:-6} LMVM_CLUSTER_FAULT_ROUNDS=${LMVM_CLUSTER_FAULT_ROUNDS:-3} LMVM_FUZZ_RUNS=${LMVM_FUZZ_RUNS:-100}
multi=(dist/test/e2e/cluster.test.js dist/test/hostile/cluster-faults.test.js)
light=()
for f in aws-cli build-deadlines build-restart cli-audit cli-iam cli-logs cli-seed-workflow cli-startup cli-wait endpoint-seed-workflow server-shutdown; do
  light+=("dist/test/e2e/$f.test.js")
done
light+=(dist/test/hostile/api-fuzz.test.js)
pglog=$(mktemp) clusterlog=$(mktemp)
LMVM_TEST_STORE=postgres node --test --test-concurrency=2 --test-force-exit dist/test/conformance >"$pglog" 2>&1 &
pg=$!
node --test --test-concurrency=1 --test-force-exit "${multi[@]}" >"$clusterlog" 2>&1 &
cluster=$!
node --test --test-concurrency=2 --test-force-exit dist/test/unit dist/test/conformance
a=$?
node --test --test-concurrency=1 --test-force-exit "${light[@]}"
l=$?
wait $pg
p=$?
echo '# the conformance suite on PostgreSQL (LMVM_TEST_STORE=postgres)'
cat "$pglog"
wait $cluster
c=$?
echo '# the multi-host tests (test/e2e/cluster.test.ts, test/hostile/cluster-faults.test.ts)'
cat "$clusterlog"
rm -f "$pglog" "$clusterlog"
rest=()
for f in dist/test/e2e/*.test.js dist/test/hostile/*.test.js; do
  case " ${multi[*]} ${light[*]} " in *" $f "*) ;; *) rest+=("$f") ;; esac
done
node --test --test-concurrency=1 --test-force-exit "${rest[@]}" dist/test/support
b=$?
echo "# unit and conformance on SQLite: exit $a; light e2e: exit $l; conformance on PostgreSQL: exit $p; multi-host: exit $c; other e2e and hostile: exit $b"
[ $a -eq 0 ] && [ $l -eq 0 ] && [ $p -eq 0 ] && [ $c -eq 0 ] && [ $b -eq 0 ]
