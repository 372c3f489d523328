#!/usr/bin/env bash
# One NanEcho session in the current git repo, composed from the five tools:
#   ckpt-select -> train-step -> meta-update record -> summarize -> progress-commit
# Usage: session.sh RUN_DIR PRESET [--push] [ITERS]
set -euo pipefail
run="${1:-.training-progress/nanecho-cached-ci}"
preset="${2:-ci}"
push="${3:-}"
iters="${4:-}"

work="$(mktemp -d "${TMPDIR:-/tmp}/nanecho-session.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "==> ckpt-select ($run)"
ckpt-select --run "$run" --preset "$preset" --out "$work/selection.json"
echo "==> train-step (preset $preset${iters:+, $iters iterations})"
train-step --run "$run" --preset "$preset" --resume "$work/selection.json" ${iters:+--iters "$iters"} \
  --out "$work/step.json"
echo "==> meta-update record"
meta-update record "$work/step.json" --run "$run"
echo "==> summarize"
readme=()
if [ -f README.md ] && grep -q '<!-- nanecho:progress:start -->' README.md; then readme=(--readme README.md); fi
summarize --root . --run "$run" "${readme[@]}"
echo "==> progress-commit"
status=0
progress-commit --root . --run "$run" --message-from "$work/step.json" ${push:+--push} \
  "${readme[@]}" --out "$work/commit-result.json" || status=$?
if [ "$status" -eq 3 ]; then echo "(nothing to commit)"; elif [ "$status" -ne 0 ]; then exit "$status"; fi
