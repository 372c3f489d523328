"""One train-step session: resolve inputs, resume or start, train, write checkpoints and step.json."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanecho_core import env, fastschema, ids, schema, store
from nanecho_core.errors import NanechoError
from nanecho_core.fingerprints import model_fingerprint
from nanecho_core.fsio import atomic_write_json, is_utf8
from nanecho_core.presets import load_config_file, resolve_config

if TYPE_CHECKING:
    from nanecho_core.data import Splits
    from nanecho_core.distributed import Distributed
    from nanecho_core.signals import StopRequest

log = logging.getLogger(__name__)
LN2 = 0.6931471805599453


@dataclass(frozen=True)
class TrainRequest:
    """The train-step command line, as the core sees it."""

    root: Path = Path(".")
    run: Path = Path(".training-progress/nanecho-cached-ci")
    preset: str = "ci"
    config_path: Path | None = None
    config_overrides: dict[str, Any] = field(default_factory=dict)
    resume: Path | None = None
    init_from: Path | None = None
    iters: int | None = None
    until_iter: int | None = None
    max_minutes: float | None = None
    device: str = "auto"
    corpus: Path | None = None
    eval_interval: int | None = None
    out: Path | None = None


@dataclass
class _Start:
    source: str = "fresh"
    fresh_reason: str | None = "no --resume given"
    resumed_from: str | None = None
    init_from: str | None = None
    regression_allowed: bool | None = None
    state: dict[str, Any] | None = None
    where: str = ""


def tokenizer_fingerprint(tokenizer: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(tokenizer, sort_keys=True).encode()).hexdigest()


def resolve_request_config(req: TrainRequest) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if req.config_path is not None:
        overrides = load_config_file(req.config_path)
    for section, values in req.config_overrides.items():
        overrides.setdefault(section, {}).update(values)
    extra_train: dict[str, Any] = {}
    if req.eval_interval is not None:
        extra_train["eval_interval"] = req.eval_interval
    if req.max_minutes is not None:
        extra_train["max_minutes"] = req.max_minutes
    options: dict[str, Any] = {"train": extra_train} if extra_train else {}
    if req.corpus is not None:
        options["data"] = {"corpus": os.fspath(req.corpus)}
    # Checked on their own first, so an error names the command line rather than the config file.
    fastschema.validate({"schema_version": 1, **options}, "config", "command-line options")
    for section, values in options.items():
        overrides.setdefault(section, {}).update(values)
    return resolve_config(req.preset, overrides, req.config_path)


def _resolve_input(root: Path, text: str) -> Path:
    """A path from a document: absolute as is; relative to --root, else to the current directory."""
    path = Path(text)
    if path.is_absolute():
        return path
    under_root = root / path
    return under_root if under_root.exists() or not path.exists() else path


def _read_start(req: TrainRequest, model_fp: str) -> _Start:
    """Decide (and verify, before anything is written) where this session starts from."""
    from nanecho_core.checkpoint import read_sidecar

    if req.resume is not None and req.init_from is not None:
        raise NanechoError("--resume and --init-from are mutually exclusive")
    if req.init_from is not None:
        sidecar = read_sidecar(req.init_from) if req.init_from.exists() else None
        state = _load_state(req.init_from, sidecar["sha256"] if sidecar else None)
        if sidecar is None:
            log.warning("%s has no sidecar (.json) with its sha256: loaded it unverified", req.init_from)
        if state["fingerprints"]["model"] != model_fp:
            raise NanechoError(
                "checkpoint model shape differs from the configured model; --init-from needs the same "
                f"architecture (checkpoint {state['model_args']})",
                req.init_from,
            )
        return _Start("init", None, None, str(state["id"]), None, state, os.fspath(req.init_from))
    if req.resume is None:
        return _Start()
    selection = store.read_document(req.resume, "selection")
    regression = bool(selection["regression"])
    if selection["source"] == "fresh":
        return _Start("fresh", selection["reason"], None, None, regression)
    chosen = selection["chosen"]
    if chosen["model_fingerprint"] != model_fp:
        raise NanechoError(
            f"checkpoint {chosen['id']} has a different model architecture ({chosen['model']}) than the "
            "configured one; start fresh or use --init-from with a matching config",
            req.resume,
            "$.chosen.model_fingerprint",
        )
    path = _resolve_input(req.root, selection["resume_path"])
    state = _load_state(path, chosen["sha256"])
    if state["fingerprints"]["model"] != model_fp:
        raise NanechoError("checkpoint model fingerprint differs from the configured model", path)
    return _Start(selection["source"], None, str(chosen["id"]), None, regression, state, os.fspath(path))


def _load_state(path: Path, expected_sha256: str | None) -> dict[str, Any]:
    """The checkpoint at `path`, verified and with every field train-step reads checked."""
    from nanecho_core.checkpoint import check_state, load_checkpoint

    state = load_checkpoint(path, expected_sha256)
    check_state(state, path)
    return state


EVAL_SET_KEYS = ("eval_iters", "batch_size")  # with the eval split and block size, they fix the eval batches


def _check_data(start: _Start, splits: Splits, eval_fp: str, train_cfg: dict[str, Any]) -> str:
    """Refuse to resume a lineage on other data or with losses measured on another eval set.

    Returns the eval fingerprint this session records: `eval_fp`, or the one its lineage already
    carries (see below), so the lineage's old and new losses stay comparable.
    """
    if start.state is None or start.source == "init":
        return eval_fp
    fps = start.state["fingerprints"]
    before = start.state.get("config", {}).get("train", {})
    changed = [k for k in EVAL_SET_KEYS if k in before and before[k] != train_cfg[k]]
    if changed:
        was = ", ".join(f"train.{k} {before[k]}" for k in changed)
        now = ", ".join(f"{train_cfg[k]}" for k in changed)
        raise NanechoError(
            f"checkpoint's val losses were measured with {was}; this config has {now}: a different eval "
            "set, so losses would not be comparable: keep those settings to resume, or use --init-from",
            start.where,
        )
    # Lineages begun before eval-set fingerprints carry the eval split's sha256. With the split
    # equal and the settings checked above, that names the same eval batches: the lineage keeps
    # it, so its older index entries are not set apart as another eval set (nor pruned as such).
    legacy = fps["eval"] == splits.eval_split_fingerprint and all(k in before for k in EVAL_SET_KEYS)
    if fps["eval"] != eval_fp and not legacy:
        raise NanechoError(
            "checkpoint was evaluated on a different eval set (eval fingerprint differs); "
            "its losses are not comparable: start fresh or use --init-from",
            start.where,
        )
    if fps["data"] != splits.data_fingerprint:
        raise NanechoError(
            "checkpoint was trained on different data (data fingerprint differs); use --init-from to "
            "start a new run from its weights",
            start.where,
        )
    return str(fps["eval"])


def run_train_step(
    req: TrainRequest, started: float | None = None, stop: StopRequest | None = None
) -> dict[str, Any]:
    """Run one session and return its record (also written to req.out when given, by rank 0).

    Under torchrun (WORLD_SIZE > 1) every rank runs this in its own process group; see distributed.py.
    `stop`: an active StopRequest the caller keeps installed past the return (train-step does, until
    its outputs are written); without one, this installs its own for the session.
    """
    from nanecho_core import distributed
    from nanecho_core.signals import StopRequest

    started = time.monotonic() if started is None else started
    # From start-up (torch import, checkpoint load) until step.json is written, a first SIGTERM or
    # SIGINT is a graceful stop: no iteration is started after it, and the session is recorded.
    with contextlib.ExitStack() as scope:
        if stop is None:
            stop = scope.enter_context(StopRequest())
        dist = scope.enter_context(distributed.process_group(req.device))
        return _run_train_step(req, started, dist, stop)


def _run_train_step(
    req: TrainRequest, started: float, dist: Distributed | None, stop: StopRequest
) -> dict[str, Any]:
    started_at = ids.utc_now()
    paths = store.run_paths(req.root, req.run)
    config = resolve_request_config(req)
    model_fp = model_fingerprint(config["model"])
    if req.iters is not None and req.iters < 0:
        raise NanechoError("--iters must be >= 0")
    if req.until_iter is not None and req.until_iter < 0:
        raise NanechoError("--until-iter must be >= 0")
    _check_writable(req, paths)  # refuse before training, not after a whole session
    origin = _environment()
    from nanecho_core import data as data_mod

    corpus_arg = config["data"]["corpus"]
    corpus_bytes = data_mod.read_corpus(corpus_arg)
    start = _read_start(req, model_fp)

    import torch

    from nanecho_core.checkpoint import FORMAT, save_checkpoint, write_sidecar
    from nanecho_core.session_loop import Budget
    from nanecho_core.trainer import Trainer, resolve_device

    device = resolve_device(req.device)
    block = int(config["model"]["block_size"])
    tokens = data_mod.cached_tokens(corpus_bytes, paths.data_cache_dir)
    splits = data_mod.split_tokens(tokens, float(config["data"]["eval_fraction"]), block)
    trainer = Trainer(config, splits, device, dist=dist)
    eval_fp = _check_data(start, splits, trainer.eval_fingerprint, config["train"])
    start_val: float | None = None
    if start.state is not None:
        if start.source == "init":
            trainer.load_weights(start.state, start.where)
        else:
            trainer.restore(start.state, start.where)
            start_val = trainer.last_val_loss
    start_iteration = trainer.iteration

    session_id = ids.new_session_id()
    fingerprints = {
        "model": model_fp,
        "tokenizer": tokenizer_fingerprint(data_mod.TOKENIZER),
        "data": splits.data_fingerprint,
        "eval": eval_fp,
        "eval_split": splits.eval_split_fingerprint,
    }
    written: list[dict[str, Any]] = []
    parent = [start.resumed_from or start.init_from]

    def save(t: Trainer) -> None:
        cid = ids.checkpoint_id(session_id, t.iteration)
        rel = f"{store.CHECKPOINTS_DIR}/{cid}.pt"
        val = t.last_val_loss
        metrics = {
            "train_loss": t.mean_train_loss() if t.mean_train_loss() is not None else t.last_train_loss,
            "val_loss": val,
            "val_bpb": None if val is None else val / LN2,
            "lr": t.lr_at(max(t.iteration - 1, 0)),
        }
        state = {
            "format": FORMAT,
            "id": cid,
            "parent_id": parent[0],
            "session_id": session_id,
            "config": config,
            "fingerprints": fingerprints,
            "metrics": metrics,
            **t.training_state(),
        }
        sha, size = save_checkpoint(state, paths.dir / rel)
        entry = {
            "id": cid,
            "file": rel,
            "sha256": sha,
            "bytes": size,
            "iteration": t.iteration,
            "tokens_seen": t.tokens_seen,
            "created_at": ids.utc_now(),
            "session_id": session_id,
            "parent_id": parent[0],
            "metrics": metrics,
            "model": dict(config["model"]),
            "model_fingerprint": model_fp,
            "tokenizer": dict(data_mod.TOKENIZER),
            "data_fingerprint": splits.data_fingerprint,
            "eval_fingerprint": eval_fp,
            "storage": {"cache_key": origin["cache_key"], "artifact_name": None, "present_locally": True},
            "status": "ok",
            "tags": [],
            "notes": [],
        }
        try:
            write_sidecar(entry, paths.dir / rel)
        except BaseException:
            (paths.dir / rel).unlink(missing_ok=True)  # nothing finds or verifies a .pt without its sidecar
            raise
        written.append(entry)
        parent[0] = cid
        log.info("saved %s (%d bytes, val_loss %s)", rel, size, val)

    iters = req.iters
    if iters is None and req.until_iter is None:
        iters = int(config["train"]["iters"])
    budget = Budget(iters=iters, until_iter=req.until_iter, max_minutes=config["train"].get("max_minutes"))
    target = budget.target(trainer.iteration)
    if target > ids.MAX_ITERATION:
        raise NanechoError(
            f"this session would reach iteration {target}; checkpoint ids "
            f"hold 8 digits, so a run ends at iteration {ids.MAX_ITERATION}"
        )
    log.info("training on %s, %s step, %d threads", device, trainer.engine, torch.get_num_threads())
    outcome = trainer.run(budget, save, stop=stop, started=started)

    record: dict[str, Any] = {
        "schema_version": 1,
        "run": paths.name,
        "session_id": session_id,
        "started_at": started_at,
        "ended_at": ids.utc_now(),
        "host": origin["host"],
        "trigger": env.trigger(),
        "git_sha": origin["git_sha"],
        "preset": config["preset"],
        "resumed_from": start.resumed_from,
        "resume_source": start.source,
        "fresh_reason": start.fresh_reason if start.source == "fresh" else None,
        "init_from": start.init_from,
        "start_iteration": start_iteration,
        "end_iteration": outcome.end_iteration,
        "tokens_seen": trainer.tokens_seen,
        "start_val_loss": start_val if start_val is not None else _first_val(outcome, start_iteration),
        "end_val_loss": trainer.last_val_loss,
        "best_val_loss": trainer.best_val_loss,
        "tokens_per_s": outcome.tokens_per_s,
        "wall_s": round(time.monotonic() - started, 3),
        "stop_reason": outcome.stop_reason,
        "checkpoints_written": [e["id"] for e in written],
        "world_size": 1 if dist is None else dist.world_size,
        "device": device,
        "torch_version": torch.__version__.split("+")[0],
        "eval_points": [p.compact() for p in outcome.eval_points],
        "checkpoints": written,
    }
    if start.regression_allowed is not None:
        record["regression_allowed"] = start.regression_allowed
    schema.validate(record, "session", req.out or "step.json")
    if req.out is not None and (dist is None or dist.is_main):
        atomic_write_json(req.out, record)
    return record


def _environment() -> dict[str, str | None]:
    """What the records take from the environment, checked before any training (a bad value used
    to surface only when step.json or a sidecar was written, after the whole budget)."""
    values: dict[str, str | None] = {
        "host": env.host(),
        "git_sha": env.git_sha(),
        "cache_key": env.cache_key(),
    }
    names = {
        "host": "$NANECHO_HOST (or the host name)",
        "git_sha": "$GITHUB_SHA",
        "cache_key": "$NANECHO_CACHE_KEY",
    }
    for name, value in values.items():
        if value is not None and not is_utf8(value):
            raise NanechoError(f"{names[name]} is not valid UTF-8 text")
    host, sha, key = values["host"], values["git_sha"], values["cache_key"]
    if host is not None and len(host) > 255:
        raise NanechoError(f"{names['host']} is longer than 255 characters")
    if sha is not None and not re.fullmatch(r"[0-9a-f]{7,64}", sha):  # the session schema's pattern
        raise NanechoError(f"$GITHUB_SHA must be a commit sha (7 to 64 hex digits), got {sha[:80]!r}")
    if key is not None and len(key) > 512:
        raise NanechoError("$NANECHO_CACHE_KEY is longer than 512 characters")
    return values


def _check_writable(req: TrainRequest, paths: store.RunPaths) -> None:
    """Checkpoints and --out can be written where they go; checked before any training."""
    checkpoints = paths.checkpoints_dir
    if not _directory_or_creatable(checkpoints):
        raise NanechoError("is not a directory: checkpoints cannot be written there", checkpoints)
    if req.out is not None:
        store.refuse_kept_file(req.out, paths, "--out")
        if req.out.is_dir():
            raise NanechoError("--out is a directory, expected the path of step.json", req.out)
        if not _directory_or_creatable(req.out.parent):
            raise NanechoError("--out cannot be written: something on its path is not a directory", req.out)


def _directory_or_creatable(path: Path) -> bool:
    """`path` is a directory, or nothing is there and its nearest existing ancestor is one."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path.is_dir()


def _first_val(outcome: Any, start_iteration: int) -> float | None:
    for point in outcome.eval_points:
        if point.iteration == start_iteration:
            return float(point.val_loss)
    return None


def github_outputs(record: dict[str, Any]) -> dict[str, Any]:
    """The `$GITHUB_OUTPUT` values of a session (checkpoint_file: the last one written)."""
    last = record["checkpoints"][-1]["file"] if record.get("checkpoints") else None
    return {
        "session_id": record["session_id"],
        "end_iteration": record["end_iteration"],
        "end_val_loss": record["end_val_loss"],
        "stop_reason": record["stop_reason"],
        "checkpoint_file": last,
    }
