"""Storage backends. The embedded DuckDB store is the default (and today the only one)."""

from .duckdb_store import DEFAULT_PATH, CommitResult, Store, StoreError, parse_duration

__all__ = ["DEFAULT_PATH", "CommitResult", "Store", "StoreError", "parse_duration"]
