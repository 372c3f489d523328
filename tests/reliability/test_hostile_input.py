"""Hostile input: every JSON document every tool reads, fuzzed with hypothesis (see fuzzing.py).

The default run tries FAST_EXAMPLES cases per tool; the slow-marked variants try 1,000 (the
figure `benchmarks/reliability.py` reports comes from the same checks).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings

from tests.reliability import fuzzing

FAST_EXAMPLES = 25
THOROUGH_EXAMPLES = 1000
_COMMON = dict(
    deadline=None,
    derandomize=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    database=None,
)
FAST = settings(max_examples=FAST_EXAMPLES, **_COMMON)  # type: ignore[arg-type]
THOROUGH = settings(max_examples=THOROUGH_EXAMPLES, **_COMMON)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def commit_repo() -> fuzzing.CommitRepo:
    repo = fuzzing.CommitRepo()
    yield repo  # type: ignore[misc]
    repo.close()


@FAST
@given(fuzzing.CKPT_SELECT_CASES)
def test_ckpt_select_refuses_hostile_documents_with_one_error_line(case: tuple[str, bytes]) -> None:
    fuzzing.check_ckpt_select(*case)


@FAST
@given(fuzzing.TRAIN_STEP_CASES)
def test_train_step_refuses_hostile_documents_before_training(case: tuple[str, bytes]) -> None:
    assume(fuzzing.check_train_step(*case))


@FAST
@given(fuzzing.META_UPDATE_CASES)
def test_meta_update_refuses_hostile_documents_and_never_writes_an_invalid_index(
    case: tuple[tuple[str, bytes], str],
) -> None:
    fuzzing.check_meta_update(case)


@FAST
@given(case=fuzzing.PROGRESS_COMMIT_CASES)
def test_progress_commit_refuses_hostile_step_json_without_committing(
    commit_repo: fuzzing.CommitRepo, case: tuple[str, bytes]
) -> None:
    assume(fuzzing.check_progress_commit(commit_repo, *case))


@FAST
@given(fuzzing.SUMMARIZE_CASES)
def test_summarize_refuses_hostile_documents_with_one_error_line(case: tuple[str, bytes]) -> None:
    fuzzing.check_summarize(*case)


@pytest.mark.slow
@THOROUGH
@given(fuzzing.CKPT_SELECT_CASES)
def test_ckpt_select_thousand_hostile_documents(case: tuple[str, bytes]) -> None:
    fuzzing.check_ckpt_select(*case)


@pytest.mark.slow
@THOROUGH
@given(fuzzing.TRAIN_STEP_CASES)
def test_train_step_thousand_hostile_documents(case: tuple[str, bytes]) -> None:
    assume(fuzzing.check_train_step(*case))


@pytest.mark.slow
@THOROUGH
@given(fuzzing.META_UPDATE_CASES)
def test_meta_update_thousand_hostile_documents(case: tuple[tuple[str, bytes], str]) -> None:
    fuzzing.check_meta_update(case)


@pytest.mark.slow
@THOROUGH
@given(case=fuzzing.PROGRESS_COMMIT_CASES)
def test_progress_commit_thousand_hostile_step_documents(
    commit_repo: fuzzing.CommitRepo, case: tuple[str, bytes]
) -> None:
    assume(fuzzing.check_progress_commit(commit_repo, *case))


@pytest.mark.slow
@THOROUGH
@given(fuzzing.SUMMARIZE_CASES)
def test_summarize_thousand_hostile_documents(case: tuple[str, bytes]) -> None:
    fuzzing.check_summarize(*case)


def test_error_line_stays_one_printable_line_when_a_hostile_key_carries_control_characters() -> None:
    from nanecho_tools.ckpt_select import app

    with fuzzing.scenario() as sc:
        doc = json.loads(sc.metadata_path.read_text())
        doc["checkpoints"][0]["metrics"]["\r\u2028\x1b[2J"] = []
        sc.metadata_path.write_text(json.dumps(doc))
        code, _out, err = fuzzing.invoke(
            app, ["--root", str(sc.root), "--run", fuzzing.RUN, "--out", "s.json"]
        )

    assert code == 2
    assert err.count("\n") == 1 and err.endswith("\n") and err.isprintable() is False  # only the final \n
    assert err[:-1].isprintable(), repr(err)
    assert err.startswith(f"Error: {sc.metadata_path}:$.checkpoints[0].metrics.  \\x1b[2J: ")


def test_number_that_overflows_to_infinity_is_refused_before_anything_is_written() -> None:
    from nanecho_tools.meta_update import app

    with fuzzing.scenario() as sc:
        text = json.dumps(sc.step).replace('"best_val_loss": 2.0', '"best_val_loss": 1e999')
        assert "1e999" in text
        (sc.out / "step.json").write_text(text)
        before = fuzzing.tree_digest(sc.base)
        args = ["record", str(sc.out / "step.json"), "--root", str(sc.root), "--run", fuzzing.RUN]
        code, _out, err = fuzzing.invoke(app, args)
        assert (code, err) == (
            2,
            f"Error: {sc.out / 'step.json'}: malformed JSON: number 1e999 is out of range\n",
        )
        assert fuzzing.tree_digest(sc.base) == before
