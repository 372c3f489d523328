"""8 concurrent committers × 5 sessions against one bare remote: every session lands, history stays linear."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.race import run_race
from tests.gitfixtures import BIN, RUN, clone, git, isolated_git_env, remote_file

SUBJECT = re.compile(
    r"^nanecho\(nanecho-cached-ci\): session (?P<sid>\S+) iters (?P<a>\d+)→(?P<b>\d+), val 5\.500→(?P<val>\d\.\d{3})$"
)


@pytest.mark.slow
def test_eight_concurrent_writers_lose_no_session_and_keep_history_linear(tmp_path: Path) -> None:
    assert (BIN / "meta-update").exists(), "the race records sessions with the real meta-update CLI"
    report = run_race(tmp_path, writers=8, sessions=5, retries=40, backoff=0.05, recorder="meta-update")
    failures = [(o.writer, o.number, o.record_rc, o.commit_rc, o.stderr) for o in report.outcomes]
    failures = [f for f in failures if f[2] != 0 or f[3] != 0]
    assert failures == []
    attempted = sorted(report.attempted)
    assert len(attempted) == 40 and len(set(attempted)) == 40
    remote = report.remote

    # Every session is in the remote's log exactly once, and its checkpoint in the remote's index.
    assert sorted(report.landed) == attempted
    index = json.loads(remote_file(remote, f"{RUN}/cache/metadata.json"))
    indexed_sessions = sorted({entry["session_id"] for entry in index["checkpoints"]})
    assert indexed_sessions == attempted
    best = min(index["checkpoints"], key=lambda e: e["metrics"]["val_loss"])
    assert index["best_id"] == best["id"]

    # A fresh clone of the remote validates, once its checkpoint files are restored the way CI restores
    # them (from the cache tier: weights are never in git, so a bare clone has only the index).
    fresh = clone(remote, tmp_path / "fresh")
    restored = fresh / RUN / "cache/checkpoints"
    restored.mkdir(parents=True)
    for writer_clone in report.clones:
        for weight in (writer_clone / RUN / "cache/checkpoints").glob("*.pt"):
            shutil.copy2(weight, restored / weight.name)
    validate = subprocess.run(
        [str(BIN / "meta-update"), "validate", "--root", str(fresh), "--run", RUN],
        env=isolated_git_env(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr

    # Linear history: the seed commit plus one commit per session, no merges.
    assert git(remote, "rev-list", "--merges", "--count", "main") == "0"
    assert git(remote, "rev-list", "--count", "main") == "41"

    # Every commit message carries its figures.
    log = git(remote, "log", "--format=@@commit@@%B", "main").split("@@commit@@")[1:]
    session_messages = [m.strip() for m in log if m.startswith("nanecho(")]
    assert len(session_messages) == 40
    seen = []
    for message in session_messages:
        subject, _, body = message.partition("\n\n")
        match = SUBJECT.match(subject)
        assert match, subject
        seen.append(match["sid"])
        for label in (
            "Run:",
            "Session:",
            "Preset:",
            "Trigger:",
            "Iterations:",
            "Val loss:",
            "Resume source:",
        ):
            assert f"\n{label} " in f"\n{body}", (label, body)
        for label in ("Best checkpoint:", "Tokens/s: 25,000", "Wall time: 60.0 s", "Code commit:"):
            assert label in body
        assert body.endswith("[skip ci]")
    assert sorted(seen) == attempted
    print("race:", report.summary())
