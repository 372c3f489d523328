#!/usr/bin/env bash
# Best effort: install chromium (dashboard browser test) and shellcheck (actionlint's run: checks)
# when running as root with apt-get. Tests that need them skip with a reason when they are absent.
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> apt-get install ${need[*]}" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/tmp/nanecho-apt.log 2>&1 \
    || echo "warning: could not install ${need[*]} (see /tmp/nanecho-apt.log); dependent tests will skip" >&2
else
  echo "note: ${need[*]} not installed and not root: dependent tests will skip" >&2
fi
exit 0
