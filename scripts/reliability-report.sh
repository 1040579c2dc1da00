#!/usr/bin/env bash
# Runs the hostile suite and writes its figures to docs/reliability.md.
# With test files as arguments (e.g. dist/test/hostile/egress-escapes.test.js), runs only those and
# replaces only their sections of the existing docs/reliability.md, noting the partial run in its header.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build --silent
attempts=$(mktemp) tap=${TMPDIR:-/tmp}/lmvm-hostile.tap
trap 'rm -f "$attempts"' EXIT
status=0
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(dist/test/hostile/)
LMVM_HOSTILE_REPORT="$attempts" node --test --test-concurrency=1 --test-force-exit --test-reporter=tap "${files[@]}" | tee "$tap" | grep -E '^# (tests|pass|fail|cancelled) |^not ok' || true
# A failed hook cancels its tests instead of failing them.
grep -q '^# fail 0' "$tap" && grep -q '^# cancelled 0' "$tap" || status=1
mkdir -p docs
if [ $# -gt 0 ] && [ -f docs/reliability.md ]; then
  node dist/scripts/render-reliability.js "$attempts" "$tap" --merge docs/reliability.md --files "$*" > docs/reliability.md.new
  mv docs/reliability.md.new docs/reliability.md
else
  node dist/scripts/render-reliability.js "$attempts" "$tap" > docs/reliability.md
fi
echo "wrote docs/reliability.md (the run's TAP output: $tap)"
exit $status
