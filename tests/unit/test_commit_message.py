from __future__ import annotations

from nanecho_core.commit_message import build_message, subject_line
from tests.factories import make_entry, make_session


def _session() -> dict:
    session = make_session(
        "20261124T101500Z-abc123",
        200,
        300,
        resumed_from="ckpt-20261124T090000Z-def456-00000200",
        resume_source="cache",
        start_val_loss=2.41234,
        end_val_loss=2.1049,
    )
    session.update({"trigger": "schedule", "git_sha": "0123456789abcdef0123456789abcdef01234567"})
    session.update({"tokens_per_s": 31234.56, "wall_s": 97.25, "best_val_loss": 2.1})
    return session


def _metadata() -> dict:
    best = make_entry("20261124T101500Z-abc123", 300, 2.1)
    return {"best_id": best["id"], "quality": {"metric": "val_loss", "mode": "min"}, "checkpoints": [best]}


def test_subject_carries_run_session_iterations_and_val_losses() -> None:
    assert subject_line("nanecho-cached-ci", _session()) == (
        "nanecho(nanecho-cached-ci): session 20261124T101500Z-abc123 iters 200→300, val 2.412→2.105"
    )


def test_body_lists_every_figure_and_ends_with_the_skip_ci_marker() -> None:
    message = build_message("nanecho-cached-ci", _session(), _metadata())
    assert message.body.splitlines() == [
        "Run: nanecho-cached-ci",
        "Session: 20261124T101500Z-abc123",
        "Preset: ci",
        "Trigger: schedule",
        "Iterations: 200 → 300",
        "Val loss: 2.412 → 2.105 (session best 2.100)",
        "Resume source: cache (ckpt-20261124T090000Z-def456-00000200)",
        "Best checkpoint: ckpt-20261124T101500Z-abc123-00000300 (val_loss 2.100, iter 300)",
        "Tokens/s: 31,235",
        "Wall time: 97.2 s",
        "Stop reason: budget_iters",
        "Device: cpu x1",
        "Code commit: 0123456789abcdef0123456789abcdef01234567",
        "",
        "[skip ci]",
    ]
    assert message.text == f"{message.subject}\n\n{message.body}\n"


def test_skip_ci_marker_is_configurable_and_can_be_disabled() -> None:
    custom = build_message("r", _session(), None, skip_ci_marker="[ci skip]")
    assert custom.body.endswith("\n\n[ci skip]")
    none = build_message("r", _session(), None, skip_ci_marker="")
    assert "skip" not in none.body
    assert none.body.endswith("Code commit: 0123456789abcdef0123456789abcdef01234567")


def test_unmeasured_losses_and_fresh_start_are_stated_not_invented() -> None:
    session = make_session(start_val_loss=None, end_val_loss=None)
    session["tokens_per_s"] = None
    message = build_message("r", session, None)
    assert message.subject == "nanecho(r): session 20261124T000000Z-aaaaaa iters 0→100, val n/a→n/a"
    assert "Resume source: fresh (no checkpoint in the index)" in message.body
    assert "Tokens/s: n/a" in message.body
    assert "Best checkpoint: none" in message.body
    assert "Code commit: unknown" in message.body


def test_without_a_session_the_subject_says_update_progress() -> None:
    message = build_message("nanecho-cached-ci", None, None)
    assert message.subject == "nanecho(nanecho-cached-ci): update progress"
    assert message.body == "Run: nanecho-cached-ci\nBest checkpoint: none\n\n[skip ci]"
