"""Artifacts: a local store per run, upload-artifact, download-artifact and dawidd6's cross-run download.

upload-artifact's layout rule is kept: the artifact root is the least common ancestor of the
search paths (a directory, a file's parent, or a glob's part before its first wildcard); hidden
files are left out unless include-hidden-files; a name is immutable within a run unless overwrite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from replay.actions import ActionContext, ActionFailed, ReplayError, _bool, _lines, _resolve

_WILDCARD = re.compile(r"[*?\[]")


class ArtifactStore:
    """<root>/<run_id>/<name>/files… plus <root>/<run_id>/<name>.json (name, created, retention)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, run_id: int, name: str) -> Path:
        return self.root / str(run_id) / name

    def exists(self, run_id: int, name: str) -> bool:
        return (self.root / str(run_id) / f"{name}.json").exists()

    def put(
        self, run_id: int, name: str, files: dict[str, Path], retention_days: int, overwrite: bool
    ) -> None:
        if self.exists(run_id, name) and not overwrite:
            raise ActionFailed(
                f"Failed to CreateArtifact: an artifact with this name already exists on the workflow run: {name}"
            )
        target = self.path(run_id, name)
        if target.exists():
            shutil.rmtree(target)
        for relative, source in files.items():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
        meta = {"name": name, "run_id": run_id, "created": time.time(), "retention_days": retention_days}
        (self.root / str(run_id) / f"{name}.json").write_text(json.dumps(meta))

    def delete(self, run_id: int | None = None, name: str | None = None) -> int:
        """Expire artifacts (all, one run's, or one name's); returns how many went."""
        gone = 0
        for meta in sorted(self.root.glob("*/*.json")):
            doc = json.loads(meta.read_text())
            if (run_id is None or doc["run_id"] == run_id) and (name is None or doc["name"] == name):
                shutil.rmtree(meta.with_suffix(""), ignore_errors=True)
                meta.unlink()
                gone += 1
        return gone

    def names(self, run_id: int) -> list[str]:
        return sorted(p.stem for p in (self.root / str(run_id)).glob("*.json"))


def _search_root(path: Path, pattern: str) -> Path:
    if _WILDCARD.search(pattern):
        parts: list[str] = []
        for part in path.parts:
            if _WILDCARD.search(part):
                break
            parts.append(part)
        return Path(*parts)
    return path if path.is_dir() else path.parent


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def collect_upload(workspace: Path, path_input: Any, include_hidden: bool) -> dict[str, Path]:
    """The files an upload-artifact `path:` selects, keyed by their path inside the artifact."""
    includes: list[tuple[str, Path]] = []
    excludes: list[Path] = []
    for line in _lines(path_input):
        if line.startswith("!"):
            excludes.append(_resolve(workspace, line[1:]))
        else:
            includes.append((line, _resolve(workspace, line)))
    if not includes:
        raise ActionFailed("Input required and not supplied: path")
    roots = [_search_root(path, pattern) for pattern, path in includes]
    root = Path(os.path.commonpath([str(r) for r in roots]))
    chosen: dict[str, Path] = {}
    for pattern, path in includes:
        if _WILDCARD.search(pattern):
            anchor = Path(path.anchor)
            matches = list(anchor.glob(str(path.relative_to(anchor))))
        else:
            matches = [path] if path.exists() else []
        for match in matches:
            for file in [match] if match.is_file() else sorted(p for p in match.rglob("*") if p.is_file()):
                relative = file.relative_to(root)
                if not include_hidden and _hidden(file.relative_to(_search_root(path, pattern))):
                    continue
                if any(file == ex or ex in file.parents for ex in excludes):
                    continue
                chosen[relative.as_posix()] = file
    return chosen


def upload_artifact(ctx: ActionContext, inputs: dict[str, Any]) -> dict[str, str]:
    name = str(inputs.get("name") or "artifact")
    if_none = str(inputs.get("if-no-files-found", "warn"))
    if if_none not in ("warn", "error", "ignore"):
        raise ReplayError(f"upload-artifact if-no-files-found: {if_none} is not valid")
    retention = int(inputs.get("retention-days") or 90)
    if not 1 <= retention <= 90:
        raise ActionFailed(f"retention-days must be within 1..90, got {retention}")
    include_hidden = _bool(inputs.get("include-hidden-files", "false"), "include-hidden-files")
    files = collect_upload(ctx.workspace, inputs.get("path"), include_hidden)
    if not files:
        message = f"No files were found with the provided path: {inputs.get('path')}. No artifacts will be uploaded."
        if if_none == "error":
            raise ActionFailed(message)
        ctx.log(("Warning: " if if_none == "warn" else "") + message)
        return {}
    overwrite = _bool(inputs.get("overwrite", "false"), "overwrite")
    run_id = int(ctx.github["run_id"])
    ctx.replay.artifacts.put(run_id, name, files, retention, overwrite)
    ctx.log(f"Artifact {name} uploaded ({len(files)} files, retention {retention} days)")
    return {"artifact-id": f"{run_id}-{name}", "artifact-url": f"replay://runs/{run_id}/artifacts/{name}"}


def _copy_tree(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target, dirs_exist_ok=True)


def download_artifact(ctx: ActionContext, inputs: dict[str, Any]) -> dict[str, str]:
    """actions/download-artifact: one named artifact of this run (or of run-id with github-token)."""
    name = inputs.get("name")
    if not name or inputs.get("pattern"):
        raise ReplayError("download-artifact: the replay emulates downloads by name only")
    run_id = int(inputs.get("run-id") or ctx.github["run_id"])
    if inputs.get("run-id") and not inputs.get("github-token"):
        raise ActionFailed("download-artifact: run-id needs github-token")
    target = _resolve(ctx.workspace, str(inputs.get("path") or "."))
    if not ctx.replay.artifacts.exists(run_id, str(name)):
        raise ActionFailed(f"Unable to download artifact(s): Artifact not found for name: {name}")
    _copy_tree(ctx.replay.artifacts.path(run_id, str(name)), target)
    ctx.log(f"Artifact {name} of run {run_id} downloaded to {target}")
    return {"download-path": str(target)}


DAWIDD6_INPUTS = {
    "workflow",
    "name",
    "path",
    "workflow_conclusion",
    "search_artifacts",
    "allow_forks",
    "if_no_artifact_found",
    "github_token",
    "branch",
    "event",
}


def download_previous_artifact(ctx: ActionContext, inputs: dict[str, Any]) -> dict[str, str]:
    """dawidd6/action-download-artifact: the named artifact of the newest matching earlier run."""
    unknown = set(inputs) - DAWIDD6_INPUTS
    if unknown:
        raise ReplayError(f"dawidd6/action-download-artifact: inputs {sorted(unknown)} are not emulated")
    if not inputs.get("name"):
        raise ReplayError("dawidd6/action-download-artifact: the replay needs an artifact name")
    if _bool(inputs.get("allow_forks", "false"), "allow_forks"):
        raise ReplayError("dawidd6/action-download-artifact: allow_forks: true is not emulated")
    name = str(inputs["name"])
    workflow = str(inputs.get("workflow") or ctx.github["workflow_file"])
    conclusion = str(inputs.get("workflow_conclusion") or "success")
    if_none = str(inputs.get("if_no_artifact_found") or "fail")
    search = _bool(inputs.get("search_artifacts", "false"), "search_artifacts")
    runs = [
        run
        for run in ctx.replay.registry()
        if run["workflow_file"] == workflow
        and run["run_id"] != int(ctx.github["run_id"])
        and run["status"] == "completed"
        and (conclusion in ("", "completed") or run["conclusion"] == conclusion)
        and (not inputs.get("branch") or run["head_branch"] == inputs["branch"])
        and (not inputs.get("event") or run["event"] == inputs["event"])
    ]
    runs.sort(key=lambda run: run["run_id"], reverse=True)
    if not search:
        runs = runs[:1]
    for run in runs:
        if ctx.replay.artifacts.exists(run["run_id"], name):
            target = _resolve(ctx.workspace, str(inputs.get("path") or "./"))
            _copy_tree(ctx.replay.artifacts.path(run["run_id"], name), target)
            ctx.log(f"==> (found) Run ID: {run['run_id']}; artifact {name} downloaded to {target}")
            return {
                "found_artifact": "true",
                "artifacts": json.dumps([{"name": name, "run_id": run["run_id"]}]),
            }
    message = f"no artifact {name} in any {conclusion} run of {workflow}"
    if if_none == "fail":
        raise ActionFailed(message)
    if if_none == "warn":
        ctx.log(f"Warning: {message}")
    return {"found_artifact": "false"}
