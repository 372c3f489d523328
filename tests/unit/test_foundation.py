"""Specs for the shared base: atomic I/O, canonical JSON, path containment, errors, schemas, store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nanecho_core import schema, store
from nanecho_core.errors import NanechoError, json_path_of
from nanecho_core.fsio import (
    append_line,
    atomic_write_json,
    atomic_writer,
    dumps_canonical,
    is_blank,
    parse_json,
    read_json,
    safe_join,
    sha256_file,
)
from nanecho_core.github import append_step_summary, write_outputs
from nanecho_core.presets import PRESETS, resolve_config
from nanecho_core.redact import redact
from tests.factories import make_entry, make_session


def test_canonical_json_sorts_keys_indents_two_and_ends_with_newline() -> None:
    assert dumps_canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == (
        '{\n  "a": [\n    1,\n    {\n      "c": 3,\n      "d": 2\n    }\n  ],\n  "b": 1\n}\n'
    )


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        dumps_canonical({"loss": float("nan")})


def test_atomic_write_failure_leaves_previous_content_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b'{"v": 2, "tru')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]


def test_append_line_repairs_a_torn_tail(tmp_path: Path) -> None:
    log = tmp_path / "sessions.jsonl"
    log.write_text('{"a":1}\n{"torn":')
    append_line(log, '{"b":2}')
    assert log.read_text() == '{"a":1}\n{"b":2}\n'  # the torn record is dropped, not left mid-log


def test_sha256_file_streams_content(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "\\\\server\\x", "a\x00b", "a\nb"])
def test_safe_join_refuses_escapes(tmp_path: Path, bad: str) -> None:
    with pytest.raises(NanechoError):
        safe_join(tmp_path, bad)


def test_safe_join_refuses_symlink_out_of_base(tmp_path: Path) -> None:
    base = tmp_path / "run"
    base.mkdir()
    (base / "link").symlink_to(tmp_path)
    with pytest.raises(NanechoError, match="resolves outside"):
        safe_join(base, "link/secret")
    assert safe_join(base, "cache/x.pt") == base / "cache" / "x.pt"


def test_error_message_is_one_line_with_file_and_json_path() -> None:
    err = NanechoError("expected a number\nsecond line", "step.json", "$.metrics.val_loss")
    assert str(err) == "Error: step.json:$.metrics.val_loss: expected a number second line"
    assert json_path_of(["checkpoints", 3, "sha256"]) == "$.checkpoints[3].sha256"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NaN", "malformed JSON: NaN is not valid JSON"),
        ("[1e999]", "malformed JSON: number 1e999 is out of range"),
        ("9" * 400, f"malformed JSON: number {'9' * 20}… is out of range"),
    ],
)
def test_json_numbers_must_fit_a_float(text: str, message: str) -> None:
    with pytest.raises(NanechoError) as caught:
        parse_json(text, "x.json")
    assert str(caught.value) == f"Error: x.json: {message}"
    assert parse_json("9" * 300) == int("9" * 300)  # big, but a float can hold it


def test_read_json_names_the_file_and_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    with pytest.raises(NanechoError) as info:
        read_json(bad)
    assert str(info.value).startswith(f"Error: {bad}: malformed JSON: Expecting value at line 1")
    with pytest.raises(NanechoError, match="file not found"):
        read_json(tmp_path / "missing.json")
    nan = tmp_path / "nan.json"
    nan.write_text('{"a": NaN}')
    with pytest.raises(NanechoError, match="NaN is not valid JSON"):
        read_json(nan)


def test_schema_violation_names_json_path() -> None:
    doc = make_session()
    doc["checkpoints_written"] = ["not-an-id"]
    with pytest.raises(NanechoError) as info:
        schema.validate(doc, "session", "step.json")
    assert str(info.value).startswith(
        "Error: step.json:$.checkpoints_written[0]: does not match the session schema"
    )


def test_schema_rejects_placeholder_zero_loss_and_escaping_file() -> None:
    entry = make_entry(train_loss=0.0)
    index = store.empty_index("r")
    index["checkpoints"] = [entry]
    assert any(
        p.startswith("$.checkpoints[0].metrics.train_loss") for p in schema.problems(index, "metadata")
    )
    for bad in ("../x.pt", "/abs.pt", "a/../../b.pt"):
        index["checkpoints"] = [{**make_entry(), "file": bad}]
        assert any(p.startswith("$.checkpoints[0].file") for p in schema.problems(index, "metadata")), bad


def test_every_schema_has_id_and_schema_version_const() -> None:
    for name in schema.SCHEMA_NAMES:
        doc = schema.schema_document(name)
        assert doc["$id"].endswith(f"/{name}.schema.json")
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        if name != "legacy_metadata":
            assert "const" in doc["properties"]["schema_version"]


def test_store_reads_sessions_skipping_only_a_torn_tail(tmp_path: Path) -> None:
    paths = store.run_paths(tmp_path, ".training-progress/r")
    store.append_session(paths, make_session("20261124T000000Z-aaaaaa"))
    store.append_session(paths, make_session("20261124T000100Z-bbbbbb", 100, 200))
    with open(paths.sessions, "a") as handle:
        handle.write('{"schema_version": 1, "run"')
    assert [s["session_id"] for s in store.read_sessions(paths)] == [
        "20261124T000000Z-aaaaaa",
        "20261124T000100Z-bbbbbb",
    ]
    lines = paths.sessions.read_text().splitlines()
    paths.sessions.write_text("\n".join([lines[0], "garbage", lines[1]]) + "\n")
    with pytest.raises(NanechoError, match="line 2 is not valid JSON"):
        store.read_sessions(paths)


@pytest.mark.parametrize("junk", ["\x1c", "\x1f", "\x85", "\x0c"])
def test_a_line_of_python_only_whitespace_is_invalid_json_not_a_blank_line(tmp_path: Path, junk: str) -> None:
    # Found by the summarize fuzzer: str.strip() took "\x1c" for an empty line and skipped it.
    paths = store.run_paths(tmp_path, ".training-progress/r")
    store.append_session(paths, make_session("20261124T000000Z-aaaaaa"))
    with open(paths.sessions, "a", encoding="utf-8") as handle:
        handle.write(junk + "\n" + " \t\r\n")  # then a line that is blank by JSON's rules
    store.append_session(paths, make_session("20261124T000100Z-bbbbbb", 100, 200))
    with pytest.raises(NanechoError, match="line 2 is not valid JSON"):
        store.read_sessions(paths)
    assert is_blank(" \t\r") and is_blank(b"") and not is_blank(junk) and not is_blank(junk.encode())


def test_store_refuses_run_dirs_outside_root(tmp_path: Path) -> None:
    for bad in ("../elsewhere", "/tmp"):
        with pytest.raises(NanechoError):
            store.run_paths(tmp_path, bad)
    with pytest.raises(NanechoError, match="root directory not found"):
        store.run_paths(tmp_path / "nope", "r")


def test_save_metadata_that_fails_validation_writes_nothing(tmp_path: Path) -> None:
    paths = store.run_paths(tmp_path, "r")
    good = store.empty_index("r")
    store.save_metadata(paths, good)
    before = paths.metadata.read_bytes()
    bad = dict(good, best_id="not an id")
    with pytest.raises(NanechoError, match=r":\$\.best_id: "):
        store.save_metadata(paths, bad)
    assert paths.metadata.read_bytes() == before


def test_redact_removes_url_credentials_tokens_and_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "canary-secret-1234")
    text = (
        "push https://x-access-token:ghs_abcdefghijklmnopqrstuvwxyz0123@github.com/o/r.git canary-secret-1234"
    )
    out = redact(text)
    assert "canary-secret-1234" not in out and "ghs_" not in out
    assert out == "push https://***@github.com/o/r.git ***"


def test_a_short_secret_value_does_not_mangle_ids_and_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_PASSWORD", "2026")  # would match every session id of the year
    monkeypatch.setenv("GITHUB_TOKEN", "canary-secret-1234")
    text = "session_id=20261125T112501Z-d9c99c token canary-secret-1234 https://u:2026@h/x"
    assert redact(text) == "session_id=20261125T112501Z-d9c99c token *** https://***@h/x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A password holding an unescaped `@`: everything before the host goes, not just its head.
        ("fatal: https://user:s3cr3t@TOKEN@host/x.git", "fatal: https://***@host/x.git"),
        ("ssh://git:pa@ss@host:22/r.git failed", "ssh://***@host:22/r.git failed"),
        # Tokens in the query string.
        ("https://h/x.git?access_token=s3cr3tTOKEN&ref=main", "https://h/x.git?access_token=***&ref=main"),
        ("https://h/api?private_token=abc;x=1 then", "https://h/api?private_token=***;x=1 then"),
        ("url https://h/x?Password=p4ss#frag", "url https://h/x?Password=***#frag"),
        # Left alone: an address with no credentials, an `@` after the path, ordinary query values.
        ("https://github.com/o/r.git (user@example.com)", "https://github.com/o/r.git (user@example.com)"),
        ("https://h/x?ref=main&depth=1", "https://h/x?ref=main&depth=1"),
        ("https://host?email=a@b.com", "https://host?email=a@b.com"),
        ("|https://x.com|bot@example.com|", "|https://x.com|bot@example.com|"),
        ("(see https://x.com) or mail (bot@example.com)", "(see https://x.com) or mail (bot@example.com)"),
    ],
)
def test_redact_covers_passwords_with_at_signs_and_query_string_tokens(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_github_outputs_and_step_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    summary = tmp_path / "summary.md"
    assert append_step_summary("# x") is False
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    write_outputs({"resume_path": None, "pushed": True, "iteration": 300})
    assert out.read_text() == "resume_path=\npushed=true\niteration=300\n"
    assert append_step_summary("## Session\n") is True
    assert summary.read_text() == "## Session\n"


def test_presets_validate_and_overrides_merge() -> None:
    for name in PRESETS:
        resolve_config(name)
    cfg = resolve_config("ci", {"model": {"n_layer": 2}, "train": {"iters": 7}})
    assert (cfg["model"]["n_layer"], cfg["model"]["n_embd"], cfg["train"]["iters"]) == (2, 128, 7)
    with pytest.raises(NanechoError, match="divisible"):
        resolve_config("ci", {"model": {"n_head": 3}})
    with pytest.raises(NanechoError, match=r"\$\.train: does not match"):
        resolve_config("ci", {"train": {"bogus": 1}})
    with pytest.raises(NanechoError, match="unknown preset"):
        resolve_config("huge")


def test_lock_serialises_writers(tmp_path: Path) -> None:
    import fcntl

    paths = store.run_paths(tmp_path, "r")
    with store.locked(paths):
        fd = os.open(paths.lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
