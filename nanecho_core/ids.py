"""Identifiers and timestamps: stable, sortable, and the same format everywhere."""

from __future__ import annotations

import datetime as dt
import secrets


def utc_now() -> str:
    """RFC 3339 UTC with second precision and a Z suffix, e.g. 2026-11-24T23:35:00Z."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_session_id() -> str:
    """`<UTC timestamp>-<6 hex>`: sorts by start time, unique across concurrent runners."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


MAX_ITERATION = 99_999_999  # the 8 digits of a checkpoint id (schema: metadata#/$defs/checkpoint_id)


def checkpoint_id(session_id: str, iteration: int) -> str:
    """`ckpt-<session>-<iteration, 8 digits>`: stable and sortable within a session."""
    return f"ckpt-{session_id}-{iteration:08d}"
