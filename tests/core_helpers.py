"""Shared helpers for the core tests: where the reference samples are, and small builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(os.environ.get("AOAI_SAMPLES", ROOT.parent / "shared" / "reference" / "samples"))
FIXTURES = ROOT / "tests" / "fixtures"


def sample(rel: str) -> bytes:
    """A reference sample (Elastic's and Azure's files are read in place, never copied into the repo)."""
    path = SAMPLES / rel
    if not path.exists():
        pytest.skip(f"reference sample {rel} not available (set AOAI_SAMPLES to the samples folder)")
    return path.read_bytes()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def stored_rows(store) -> dict[str, list]:
    """Every row of the logs, metrics and dead_letters tables by id, without the time each was stored: what two
    ingests of the same input must agree on."""
    stamps = {"logs": "event.ingested", "metrics": "event.ingested", "dead_letters": "received_at"}
    return {table: store.cursor().execute(f'SELECT * EXCLUDE ("{stamp}") FROM {table} ORDER BY id').fetchall()
            for table, stamp in stamps.items()}
