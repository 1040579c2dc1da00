#!/usr/bin/env bash
# Runs the hostile suite and writes its figures to docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build --silent
attempts=$(mktemp) tap=${TMPDIR:-/tmp}/lmvm-hostile.tap
trap 'rm -f "$attempts"' EXIT
status=0
LMVM_HOSTILE_REPORT="$attempts" node --test --test-concurrency=1 --test-force-exit --test-reporter=tap dist/test/hostile/ | tee "$tap" | grep -E '^# (tests|pass|fail|cancelled) |^not ok' || true
# A failed hook cancels its tests instead of failing them.
grep -q '^# fail 0' "$tap" && grep -q '^# cancelled 0' "$tap" || status=1
mkdir -p docs
node dist/scripts/render-reliability.js "$attempts" "$tap" > docs/reliability.md
echo "wrote docs/reliability.md (the run's TAP output: $tap)"
exit $status
