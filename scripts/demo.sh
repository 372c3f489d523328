#!/usr/bin/env bash
# The NanEcho demo: a scratch repo with a bare remote, two `ci` sessions composed from the five
# tools (the second resumes from the first's checkpoint), then the summary.
# Usage: demo.sh [DIR] [ITERS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-demo}"
iters="${2:-}"
shown="$dir"  # as the user gave it, for the messages

rm -rf "$dir"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
git init -q --bare -b main "$dir/remote.git"
git init -q -b main "$dir/work"
cd "$dir/work"
git remote add origin "$dir/remote.git"
cat > README.md <<'MD'
# NanEcho demo repository

A scratch repository whose model trains a little at a time. Progress:

<!-- nanecho:progress:start -->
<!-- nanecho:progress:end -->
MD
git add README.md
git -c user.name=nanecho-demo -c user.email=demo@nanecho.invalid commit -q -m "demo: initial commit"
git push -q origin main

for session in 1 2; do
  echo
  echo "######## session $session ########"
  bash "$here/session.sh" .training-progress/nanecho-cached-ci ci --push "$iters"
done

echo
echo "######## summary ########"
summarize --root . --format term
echo
echo "######## remote history ($shown/remote.git) ########"
git --git-dir "$dir/remote.git" log --format='%h %s' main
echo
echo "Files: $shown/work/.training-progress/ (PROGRESS.md, nanecho-cached-ci/{sessions.jsonl,cache/metadata.json})"
