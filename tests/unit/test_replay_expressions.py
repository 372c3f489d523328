"""The `${{ }}` expression subset the replay evaluates, against GitHub's documented semantics."""

from __future__ import annotations

import pytest

from replay.expressions import (
    Context,
    ExpressionError,
    evaluate,
    evaluate_condition,
    substitute,
    substitute_value,
)

CONTEXTS = {
    "github": {"event_name": "push", "run_id": "1042", "event": {"number": 7}},
    "inputs": {"preset": "scheduled", "allow_fresh": True, "iters": ""},
    "vars": {"NANECHO_RUN": ""},
    "steps": {"cache": {"outputs": {"cache-matched-key": "k-1"}, "outcome": "success"}},
}


def ev(text: str, status: str = "success") -> object:
    return evaluate(text, Context(CONTEXTS, status))


def test_literals_and_context_access_are_case_insensitive():
    assert ev("null") is None
    assert ev("TRUE") is True
    assert ev("0x10") == 16
    assert ev("'it''s'") == "it's"
    assert ev("GitHub.Event_Name") == "push"
    assert ev("github['event_name']") == "push"
    assert ev("steps.cache.outputs.cache-matched-key") == "k-1"
    assert ev("steps.missing.outputs.x") is None


def test_and_or_return_an_operand_like_javascript():
    assert ev("github.event_name == 'schedule' && 'scheduled' || 'ci'") == "ci"
    assert ev("inputs.preset || 'ci'") == "scheduled"
    assert ev("inputs.iters || 'default'") == "default"
    assert ev("inputs.allow_fresh && 'true' || 'false'") == "true"
    assert ev("vars.NANECHO_RUN || format('nanecho-cached-{0}', 'ci')") == "nanecho-cached-ci"


def test_comparisons_ignore_case_and_coerce_mismatched_types_to_numbers():
    assert ev("github.event_name == 'PUSH'") is True
    assert ev("github.run_id == 1042") is True
    assert ev("'' == 0") is True
    assert ev("null == 0") is True
    assert ev("'abc' == 0") is False  # NaN equals nothing
    assert ev("1 < 2 && 2 <= 2 && 3 > 2 && !(1 >= 2)") is True
    assert ev("github.event != github.event") is False


def test_functions():
    assert ev("format('{0}-{1}-{{x}}', 'a', 1)") == "a-1-{x}"
    assert ev("contains('Hello', 'ELL')") is True
    assert ev("contains(fromJSON('[\"a\",\"b\"]'), 'B')") is True
    assert ev("startsWith('refs/heads/main', 'refs/')") is True
    assert ev("endsWith('x.yml', '.YML')") is True
    assert ev("join(fromJSON('[1,2]'), '+')") == "1+2"
    assert ev("toJSON(github.event)") == '{\n  "number": 7\n}'


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("success", [True, True, False, False]),
        ("failure", [False, True, True, False]),
        ("cancelled", [False, True, False, True]),
    ],
)
def test_status_functions_follow_the_job_status(status, expected):
    assert [ev(f"{name}()", status) for name in ("success", "always", "failure", "cancelled")] == expected


def test_if_without_status_function_means_success_and_condition():
    ctx = Context(CONTEXTS, "failure")
    assert evaluate_condition("github.event_name == 'push'", Context(CONTEXTS)) is True
    assert evaluate_condition("github.event_name == 'push'", ctx) is False
    assert evaluate_condition("${{ always() && github.event_name == 'push' }}", ctx) is True
    assert evaluate_condition("failure() && steps.cache.outcome == 'success'", ctx) is True
    assert evaluate_condition(None, ctx) is False
    assert evaluate_condition("steps.cache.outputs.cache-matched-key == ''", Context(CONTEXTS)) is False


def test_substitution_renders_values_and_keeps_types_for_a_lone_expression():
    ctx = Context(CONTEXTS)
    assert (
        substitute("run ${{ github.run_id }}: ${{ inputs.allow_fresh }} '${{ 'a}}b' }}'", ctx)
        == "run 1042: true 'a}}b'"
    )
    assert substitute("n=${{ null }}.", ctx) == "n=."
    assert substitute_value("${{ inputs.allow_fresh }}", ctx) is True
    assert substitute_value(" x ${{ inputs.allow_fresh }}", ctx) == " x true"


@pytest.mark.parametrize(
    "text",
    [
        "hashFiles('**/x')",
        "github.*.name",
        "matrix.os",
        "1 +",
        "'unterminated",
        "github.event_name = 'x'",
        "success(1)",
    ],
)
def test_unsupported_or_malformed_expressions_fail_loudly(text):
    with pytest.raises(ExpressionError):
        ev(text)


def test_unterminated_substitution_fails_loudly():
    with pytest.raises(ExpressionError, match="unterminated"):
        substitute("${{ github.run_id ", Context(CONTEXTS))
