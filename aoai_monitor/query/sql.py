"""Read-only SQL for users (CLI `query`, the web UI's SQL page): one SELECT, no file or network access."""

from __future__ import annotations

import duckdb

from ..store import Store, StoreError

_ALLOWED = {"SELECT", "EXPLAIN"}


class QueryError(ValueError):
    """A query we refuse or that failed, with a message that says what to change."""


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {exc}") from exc
    if len(statements) != 1:
        raise QueryError("give exactly one SQL statement")
    kind = statements[0].type.name
    if kind not in _ALLOWED:
        raise QueryError(f"only SELECT queries are allowed here (got {kind}); the store is read-only for queries")


def run_query(store: Store, sql: str, params: list | None = None, limit: int | None = None) -> tuple[list[str], list[tuple]]:
    """Run one read-only SELECT on its own cursor, with external access (files, extensions) disabled."""
    cur = store.cursor()
    check_read_only(cur, sql)
    try:
        rel = cur.execute(sql, params or [])
        columns = [d[0] for d in rel.description] if rel.description else []
        rows = rel.fetchmany(limit) if limit else rel.fetchall()
    except duckdb.Error as exc:
        raise QueryError(str(exc).split("\n")[0]) from exc
    return columns, rows


def open_for_queries(path: str) -> Store:
    """A read-only store (every Store already has file and network access switched off for user SQL)."""
    return Store(path, read_only=True)


__all__ = ["QueryError", "run_query", "check_read_only", "open_for_queries", "StoreError"]
