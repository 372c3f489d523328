"""Rebase a progress commit onto the fetched upstream in-process: the merge drivers' rules, no spawns.

`git rebase` runs `meta-update merge-driver` as a new Python process for every replayed metadata
change; under 8 concurrent writers that start-up is most of the window in which another writer
pushes first. A progress commit is one commit touching only files whose merge rules NanEcho owns,
so it is replayed here with the same rules (the index merge of index_merge.merge_documents,
`git merge-file --union` for sessions.jsonl, upstream's copy of derived files, which are
regenerated afterwards) through a private index, `commit-tree` and `reset --keep`. Anything else
(several local commits, other files, a textual conflict) returns False and the caller runs the
real `git rebase` with the drivers.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from nanecho_core.errors import NanechoError
from nanecho_core.gitops import Git
from nanecho_core.store import PROGRESS_FILE, SUMMARY_FILE

log = logging.getLogger(__name__)

DERIVED_NAMES = (SUMMARY_FILE, PROGRESS_FILE)


def _kind(path: str) -> str | None:
    pure = PurePosixPath(path)
    if pure.name == "metadata.json" and pure.parent.name == "cache":
        return "metadata"
    if pure.name == "sessions.jsonl":
        return "union"
    if pure.name in DERIVED_NAMES:
        return "derived"
    if pure.name in (".gitattributes", ".gitignore", "README.md"):
        return "text"
    return None


def _merge_text(
    git: Git, work: Path, base: bytes | None, ours: bytes, theirs: bytes, union: bool
) -> bytes | None:
    files = []
    for name, data in (("ours", ours), ("base", base or b""), ("theirs", theirs)):
        path = work / name
        path.write_bytes(data)
        files.append(str(path))
    args = ["git", "merge-file", "-p", *(["--union"] if union else []), *files]
    proc = subprocess.run(args, cwd=git.root, env=git.env, capture_output=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def _merge_metadata(work: Path, base: bytes | None, ours: bytes, theirs: bytes) -> bytes | None:
    from nanecho_core.index_merge import merge_files

    paths = [work / "m-base.json", work / "m-ours.json", work / "m-theirs.json"]
    for path, data in zip(paths, (base or b"", ours, theirs), strict=True):
        path.write_bytes(data)
    try:
        merge_files(str(paths[0]), str(paths[1]), str(paths[2]))
    except NanechoError as exc:
        log.info("in-process metadata merge refused (%s); falling back to git rebase", exc)
        return None
    return paths[1].read_bytes()


def _merged(git: Git, work: Path, kind: str, base: bytes | None, ours: bytes, theirs: bytes) -> bytes | None:
    if kind == "metadata":
        return _merge_metadata(work, base, ours, theirs)
    if kind == "derived":
        return ours  # regenerated from the merged sessions right after the replay
    return _merge_text(git, work, base, ours, theirs, union=kind == "union")


def _blobs(git: Git, specs: list[str]) -> list[bytes | None]:
    """`git cat-file --batch` for many `rev:path` at once (one process): bytes, or None when missing."""
    proc = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=git.root,
        env=git.env,
        input="".join(f"{spec}\n" for spec in specs).encode(),
        capture_output=True,
        check=True,
    )
    data, offset = proc.stdout, 0
    found: list[bytes | None] = []
    for _ in specs:
        end = data.index(b"\n", offset)
        header = data[offset:end].split()
        offset = end + 1
        if len(header) != 3 or header[1] != b"blob":
            found.append(None)
            continue
        size = int(header[2])
        found.append(data[offset : offset + size])
        offset += size + 1
    return found


def _write_tree(git: Git, upstream: str, files: dict[str, bytes], work: Path) -> str:
    """The tree of `upstream` with `files` replaced, built in a private index (the real one is untouched)."""
    blobs = []
    for number, data in enumerate(files.values()):
        blob = work / f"blob-{number}"
        blob.write_bytes(data)
        blobs.append(str(blob))
    hashed = git.run("hash-object", "-w", "--stdin-paths", input_text="\n".join(blobs) + "\n").stdout.split()
    private = git.with_env({"GIT_INDEX_FILE": str(work / "index")})
    private.run("read-tree", upstream)
    info = "".join(f"100644 {sha}\t{path}\n" for sha, path in zip(hashed, files, strict=True))
    private.run("update-index", "--index-info", input_text=info)
    return private.out("write-tree")


def _replayed_tree(git: Git, upstream: str, changed: list[str], sides: list[bytes | None]) -> str | None:
    """The tree of `upstream` with the commit's changes merged in; None when git rebase must decide."""
    results: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="nanecho-replay-") as tmp:
        for number, path in enumerate(changed):
            base, ours, theirs = sides[3 * number : 3 * number + 3]
            if theirs is None:
                return None  # a deletion: leave it to git rebase
            if ours is None or ours in (base, theirs):
                results[path] = theirs
                continue
            merged = _merged(git, Path(tmp), _kind(path) or "", base, ours, theirs)
            if merged is None:
                return None
            results[path] = merged
        return _write_tree(git, upstream, results, Path(tmp))


def replay_onto(git: Git, upstream: str) -> bool:
    """Rebase the one local progress commit onto `upstream`; False when this fast path does not apply."""
    local = [line.split() for line in git.out("rev-list", "--parents", f"{upstream}..HEAD").splitlines()]
    if len(local) != 1 or len(local[0]) != 2:
        return False  # several local commits, a merge or a root commit: git rebase knows best
    commit, parent = local[0]
    changed = git.out("diff-tree", "--no-commit-id", "--name-only", "-r", parent, commit).splitlines()
    if not changed or any(_kind(path) is None for path in changed):
        return False
    sides = _blobs(git, [f"{rev}:{path}" for path in changed for rev in (parent, upstream, commit)])
    try:
        tree = _replayed_tree(git, upstream, changed, sides)
    except OSError as exc:  # a full or unwritable temp directory: git rebase needs none
        log.info("in-process replay has no scratch space (%s); falling back to git rebase", exc)
        return False
    if tree is None:
        return False
    fields = git.run("log", "-1", "--format=%an%x00%ae%x00%ad%x00%B", "--date=raw", commit).stdout.split(
        "\0", 3
    )
    keep_author = {"GIT_AUTHOR_NAME": fields[0], "GIT_AUTHOR_EMAIL": fields[1], "GIT_AUTHOR_DATE": fields[2]}
    replayed = git.with_env(keep_author).run(
        "commit-tree", tree, "-p", upstream, "-F", "-", input_text=fields[3].rstrip("\n") + "\n"
    )
    new = replayed.stdout.strip()
    # --keep moves HEAD (branch or detached) and updates exactly the files that differ, refusing to
    # overwrite local edits to them.
    if not git.run("reset", "--quiet", "--keep", new, check=False).ok:
        return False
    log.info("replayed %s onto %s as %s", commit[:12], upstream, new[:12])
    return True
