# NanEcho recipes. Run through ./dev (it creates .venv first): `./dev demo`, `./dev test`.
set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments := false

venv := justfile_directory() / ".venv/bin"
export PATH := venv + ":" + env_var("PATH")

# List the recipes.
default:
    @just --list

# A fresh local demo: scratch repo + bare remote, two `ci` sessions from the five tools, then the summary.
demo dir="demo" iters="":
    bash scripts/demo.sh "{{dir}}" "{{iters}}"

# One session in the current repo: select -> train -> record -> summarize -> commit (push with push="--push").
session run=".training-progress/nanecho-cached-ci" preset="ci" push="" iters="":
    bash scripts/session.sh "{{run}}" "{{preset}}" "{{push}}" "{{iters}}"

# The whole test suite (fast and slow), as CI runs it.
test *args: system-deps
    python -m pytest -q -n 2 --dist loadgroup {{args}}

# Only the fast tests (< 60 s).
test-fast *args:
    python -m pytest -q -n 2 -m "not slow" {{args}}

# ruff, ruff format, mypy, actionlint, workflow schemas, and the CLI reference being current.
lint:
    ruff check .
    ruff format --check .
    mypy
    actionlint .github/workflows/*.yml
    check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
    python scripts/cli_reference.py --check

# Regenerate docs/cli.md from the tools' --help.
docs:
    python scripts/cli_reference.py

# Benchmarks: speed vs nanoGPT, quality, checkpoint I/O, metadata and summarize scale, git growth, the
# push race, start-up; the GPU one where CUDA is. Print figures (about 10 minutes on 2 cores).
bench:
    python benchmarks/train_speed.py
    python benchmarks/quality.py
    python benchmarks/ckpt_io.py
    python benchmarks/scale_metadata.py
    python benchmarks/summarize_scale.py
    python benchmarks/git_growth.py
    python benchmarks/race.py
    python benchmarks/startup.py
    if python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then python benchmarks/gpu.py; else echo "gpu.py: skipped (no CUDA device)"; fi

# Replay the training workflow locally against a temporary bare remote.
replay *args:
    python -m replay {{args}}

# Kill -9, corruption and hostile-input fuzzing at full size; prints a figures table.
reliability runs="200":
    python benchmarks/reliability.py --runs {{runs}}

# 1-process vs 2-process (torchrun, gloo) tokens/s on this machine.
bench-ddp:
    python benchmarks/ddp.py

# Install the system packages some tests use (headless chromium, shellcheck) when we may.
system-deps:
    @bash scripts/system_deps.sh
