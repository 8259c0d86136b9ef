"""`[[outputs.elasticsearch]]`: ship every stored document to the data streams of Elastic's integration.

Hooked into the store's transaction (Store.outputs): after a transaction's writes and before its COMMIT,
the rows it inserted are read back, rebuilt as nested Elastic documents and bulk-created with their
deterministic ids as `_id`. If the cluster cannot take them (after retries), the exception rolls the
transaction back, so the input's checkpoint does not move and the batch is read again: Elasticsearch and
the embedded store never lose a batch, and replays are answered 409 (already indexed), never duplicated.
Why this design and its costs: docs/elasticsearch.md.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import orjson

from .. import schema
from ..config import ConfigError, reveal
from ..normalize.common import nest
from ..store import parse_duration
from .templates import SHIPPED_TABLES, stream_for

log = logging.getLogger("aoai_monitor.outputs.elasticsearch")

SECRET_FIELDS = {"api_key", "password"}
ALLOWED = {"name", "hosts", "cloud_id", "api_key", "username", "password", "ca_certs", "verify_certs", "namespace",
           "write_store", "retention", "chunk_size", "thread_count", "max_retries", "initial_backoff", "max_backoff",
           "request_timeout"}
RETRY_STATUSES = {429, 500, 502, 503, 504}
# Per-document statuses that are the cluster's set-up, not the document's fault: hold the batch, don't dead-letter.
SETUP_STATUSES = {401, 403, 404}
CLIENT_HINT = "pip install 'aoai-monitor[elasticsearch]'"


class OutputError(RuntimeError):
    """The cluster did not take a batch; the message says what to change. Raised inside the transaction."""


def elasticsearch_settings(s: dict, where: str) -> dict:
    """Validate one [[outputs.elasticsearch]] section (secrets already wrapped by config._secrets)."""
    unknown = set(s) - ALLOWED
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; allowed: {sorted(ALLOWED)}")
    out = dict(s)
    hosts = out.get("hosts") or []
    out["hosts"] = [hosts] if isinstance(hosts, str) else list(hosts)
    if not out["hosts"] and not out.get("cloud_id"):
        raise ConfigError(f"{where}: set `hosts = [\"https://my-cluster:9200\"]` or `cloud_id` (Elastic Cloud)")
    for h in out["hosts"]:
        if not re.match(r"^https?://[^/\s]+", str(h)):
            raise ConfigError(f"{where}.hosts: {h!r} is not a URL; write it as https://host:9200")
    if out.get("api_key") and (out.get("username") or out.get("password")):
        raise ConfigError(f"{where}: give either `api_key` or `username` + `password`, not both")
    if bool(out.get("username")) != bool(out.get("password")):
        raise ConfigError(f"{where}: `username` and `password` go together (or use `api_key`, e.g. api_key_env = \"ES_API_KEY\")")
    if out.get("ca_certs") and not Path(out["ca_certs"]).is_file():
        raise ConfigError(f"{where}.ca_certs: {out['ca_certs']} is not a file; give the PEM file of the cluster's CA")
    out["verify_certs"] = _bool(out.get("verify_certs", True), where + ".verify_certs")
    out["write_store"] = _bool(out.get("write_store", True), where + ".write_store")
    ns = out.setdefault("namespace", "default")
    if not isinstance(ns, str) or not re.fullmatch(r"[a-z0-9_][a-z0-9_.]{0,99}", ns) or ns in (".", ".."):
        raise ConfigError(f"{where}.namespace {ns!r}: use lower-case letters, digits, `_` or `.` (no `-`), "
                          "at most 100 characters, e.g. \"production\"")
    out.setdefault("name", "elasticsearch")
    try:
        parse_duration(out.setdefault("retention", "30d"))
        for key, default in (("initial_backoff", "0.5s"), ("max_backoff", "10s"), ("request_timeout", "30s")):
            out[key] = parse_duration(str(out.get(key, default)))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for key, default, lo in (("chunk_size", 500, 1), ("thread_count", 2, 1), ("max_retries", 5, 0)):
        try:
            out[key] = int(out.get(key, default))
        except (TypeError, ValueError):
            out[key] = lo - 1
        if out[key] < lo:
            raise ConfigError(f"{where}.{key}: use a whole number ≥ {lo} (default {default})")
    return out


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: use true or false (got {value!r})")


def make_client(settings: dict):
    """The official client. Retries and backoff are ours (ship), so the transport does not retry statuses."""
    try:
        from elasticsearch import Elasticsearch
    except ImportError:
        raise OutputError(f"[[outputs.elasticsearch]] needs the Elasticsearch client: {CLIENT_HINT}") from None
    kwargs: dict[str, Any] = {"request_timeout": settings["request_timeout"], "retry_on_status": (),
                              "max_retries": 0, "verify_certs": settings["verify_certs"]}
    if settings.get("cloud_id"):
        kwargs["cloud_id"] = reveal(settings["cloud_id"])
    else:
        kwargs["hosts"] = [str(h) for h in settings["hosts"]]
    if settings.get("api_key"):
        kwargs["api_key"] = reveal(settings["api_key"])
    elif settings.get("username"):
        kwargs["basic_auth"] = (settings["username"], reveal(settings["password"]))
    if settings.get("ca_certs"):
        kwargs["ca_certs"] = settings["ca_certs"]
    return Elasticsearch(**kwargs)


def explain(exc: Exception, settings: dict) -> str:
    """A client error as a sentence that says what to fix (never echoing credentials)."""
    where = f"[[outputs.elasticsearch]] {settings['name']}"
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "meta", None), "status", None)
    text = f"{type(exc).__name__}: {str(exc)[:300]}"
    for secret in (settings.get("api_key"), settings.get("password")):
        if secret:
            text = text.replace(reveal(secret), "***")
    if "compatible-with" in text or "media_type_header_exception" in text:
        return (f"{where}: the cluster refused this client's API version ({text}); install the client of the "
                f"cluster's major version, e.g. pip install 'elasticsearch>=8.12,<9' for Elasticsearch 8")
    if status == 401:
        return f"{where}: authentication failed ({text}); check api_key (or username/password)"
    if status == 403:
        return (f"{where}: not allowed ({text}); the API key or user needs `create_doc` and `auto_configure` on "
                "logs-*, metrics-*, traces-* (and `manage_index_templates`, `manage_ilm` for `elastic setup`)")
    if status == 404:
        return f"{where}: not found ({text}); run `aoai-monitor elastic setup` so the data stream templates exist"
    if status is None:
        return (f"{where}: cannot reach {', '.join(map(str, settings['hosts'])) or 'the cloud_id endpoint'} ({text}); "
                "check hosts, the network, and TLS (ca_certs / verify_certs)")
    return f"{where}: Elasticsearch answered {status} ({text})"


class ElasticsearchOutput:
    """One cluster. `ship(tx)` is called by Store.transaction() before COMMIT (see Store.outputs)."""

    def __init__(self, settings: dict, client=None):
        self.settings = settings
        self.name = settings["name"]
        self.client = client or make_client(settings)
        self.shipped = 0
        self.already_indexed = 0
        self.dead_lettered = 0

    def ship(self, tx) -> None:
        """Bulk-create the rows this transaction inserted; dead-letter rejected documents; raise if held back."""
        actions = []
        for table in SHIPPED_TABLES:
            if tx.result.stored.get(table):
                actions += documents(tx.con, table, tx.ingested_ms, self.settings["namespace"])
        if not actions:
            return
        rejected = self.send(actions)
        if rejected:
            tx.insert_rejects(rejected)
            self.dead_lettered += len(rejected)

    def send(self, actions: list[dict]) -> list[tuple[str, str, str]]:
        """Bulk `create` with bounded concurrency; retry 429/5xx/unreachable with exponential backoff.

        Returns the documents Elasticsearch rejected as (source, reason, raw) dead letters. 409 (an
        existing _id) counts as indexed. Raises OutputError when retries run out or the set-up is wrong.
        """
        from elasticsearch import ApiError, TransportError, helpers

        s = self.settings
        pending = {a["_id"]: a for a in actions}
        rejected: list[tuple[str, str, str]] = []
        attempt = 0
        while True:
            batch = list(pending.values())
            retry: dict[str, dict] = {}
            last = ""
            try:
                for ok, item in helpers.parallel_bulk(self.client, batch, thread_count=s["thread_count"],
                                                      chunk_size=s["chunk_size"], raise_on_error=False,
                                                      raise_on_exception=False):
                    info = next(iter(item.values()))
                    action = pending.pop(info.get("_id"), None)
                    status = info.get("status")
                    if action is None:
                        continue
                    if ok:
                        self.shipped += 1
                    elif status == 409:
                        self.already_indexed += 1
                    elif "exception" in info:  # the whole bulk request failed, not this document
                        exc = info["exception"]
                        if status not in RETRY_STATUSES:
                            raise OutputError(explain(exc, s)) from None
                        retry[action["_id"]], last = action, explain(exc, s)
                    elif status in RETRY_STATUSES:
                        retry[action["_id"]], last = action, f"{status} {_reason(info)}"
                    elif status in SETUP_STATUSES:
                        raise OutputError(f"[[outputs.elasticsearch]] {self.name}: {action['_index']} refused documents "
                                          f"({status} {_reason(info)}); run `aoai-monitor elastic setup` and check the "
                                          "API key's privileges (create_doc, auto_configure)")
                    else:
                        rejected.append((f"elasticsearch:{self.name}/{action['_index']}/{action['_id']}",
                                         f"elasticsearch rejected the document: {status} {_reason(info)}"[:1000],
                                         orjson.dumps(action["_source"]).decode()))
            except (ApiError, TransportError) as exc:  # unreachable, timeouts: every unanswered document again
                retry.update(pending)
                last = explain(exc, s)
            pending = retry
            if not pending:
                return rejected
            attempt += 1
            if attempt > s["max_retries"]:
                raise OutputError(f"{len(pending)} document(s) not taken after {s['max_retries']} retries: {last}; "
                                  "the batch is held (input not checkpointed) and retried")
            delay = min(s["initial_backoff"] * 2 ** (attempt - 1), s["max_backoff"])
            log.warning("%s: %d document(s) not taken (%s); retry %d/%d in %.1fs", self.name, len(pending), last,
                        attempt, s["max_retries"], delay)
            time.sleep(delay)

    def close(self) -> None:
        self.client.close()


def _reason(info: dict) -> str:
    err = info.get("error")
    if isinstance(err, dict):
        return f"{err.get('type', 'error')}: {err.get('reason', '')}"
    return str(err or "")


class PruneShipped:
    """For `write_store = false`: drop the shipped rows before COMMIT, so the store keeps only input state,
    dead letters and what the outputs could not send (nothing: a failed shipment rolls back)."""

    def ship(self, tx) -> None:
        for table in SHIPPED_TABLES:
            if tx.result.stored.get(table):
                tx.con.execute(f'DELETE FROM {table} WHERE "event.ingested" = epoch_ms(?::BIGINT)', [tx.ingested_ms])

    def close(self) -> None:
        pass


def documents(con, table: str, ingested_ms: int, namespace: str) -> list[dict]:
    """Bulk `create` actions for the rows of `table` written with this event.ingested (one transaction)."""
    fields = schema.TABLES[table]
    select = ["CAST(id AS VARCHAR) AS id"]
    for f in fields:
        col = '"' + f.name.replace('"', '""') + '"'
        select.append(f"strftime({col}, '%Y-%m-%dT%H:%M:%S.%gZ') AS {col}" if f.type == "date" else col)
    select.append("extra")
    arrow = con.sql(f'SELECT {", ".join(select)} FROM {table} WHERE "event.ingested" = epoch_ms($ms::BIGINT)',
                    params={"ms": ingested_ms}).to_arrow_table()
    # Most of a wide table's columns are empty in any batch: drop them before turning rows into dicts.
    arrow = arrow.select([i for i, c in enumerate(arrow.columns) if c.null_count < arrow.num_rows])
    json_cols = {f.name for f in fields if schema.duckdb_type(f, table) == "JSON"}
    out = []
    for row in arrow.to_pylist():
        flat: dict = {}
        extra = row.pop("extra", None)
        if extra:
            flat.update(orjson.loads(extra))
        for key, value in row.items():
            if value is None:
                continue
            flat[key] = orjson.loads(value) if key in json_cols else value
        doc_id = flat.pop("id")
        flat = {k: v for k, v in flat.items() if not (isinstance(v, float) and not math.isfinite(v))}
        stream = stream_for(table, flat.get("data_stream.dataset"))
        flat.update({"data_stream.type": stream.type, "data_stream.dataset": stream.dataset,
                     "data_stream.namespace": namespace})
        out.append({"_op_type": "create", "_index": stream.name(namespace), "_id": doc_id, "_source": nest(flat)})
    return out
