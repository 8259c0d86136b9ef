"""A small Elasticsearch stand-in (test-only): the endpoints aoai-monitor uses, with Elasticsearch's shapes.

`/` (version info + the X-Elastic-Product header the client checks), `_bulk` (NDJSON; `create` → 201, or
409 version_conflict_engine_exception when the _id exists in that data stream), `_index_template`,
`_component_template`, `_ilm/policy`, `_data_stream`. Faults are programmable: `bulk_statuses` (whole
requests answered 429/5xx, in order), `item_failures` (per-_id item status + error, `times` answers),
`require_api_key`; a `version` older than the client's major refuses its compatible-with header as
Elasticsearch does. Everything received is kept for assertions. It does not check mappings.
"""

from __future__ import annotations

import base64
import gzip
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import orjson

ERROR_TYPES = {400: "document_parsing_exception", 401: "security_exception", 403: "security_exception",
               404: "index_not_found_exception", 429: "es_rejected_execution_exception", 500: "exception",
               502: "exception", 503: "unavailable_shards_exception", 504: "exception"}


class ElasticsearchStandin:
    def __init__(self, version: str | None = None):
        import elasticsearch

        self.version = version or f"{elasticsearch.__version__[0]}.1.0"  # the client's major: it refuses others
        self.lock = threading.Lock()
        self.docs: dict[str, dict[str, dict]] = defaultdict(dict)  # data stream → _id → _source
        self.index_templates: dict[str, dict] = {}
        self.component_templates: dict[str, dict] = {}
        self.ilm_policies: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.bulk_items: list[tuple[str, str, int]] = []  # (data stream, _id, status) of every answered item
        self.bulk_statuses: list[int] = []
        self.item_failures: dict[str, dict] = {}  # _id → {"status": 400, "reason": "...", "times": n (None: always)}
        self.down = False  # answer every request 503 (a cluster that is unavailable)
        self.require_api_key: str | None = None  # "id:key" → expect `Authorization: ApiKey base64(id:key)`
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ElasticsearchStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self) -> int:
        with self.lock:
            return sum(len(d) for d in self.docs.values())

    # --- request handling (called from handler threads) --------------------------------------------

    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[int, object]:
        with self.lock:
            self.requests.append((method, path))
        accept = headers.get("Accept") or ""
        major = int(self.version.split(".")[0])  # REST compatibility: this major and the previous one
        if "compatible-with=" in accept and not any(f"compatible-with={m}" in accept for m in (major, major - 1)):
            return 400, {"error": {"root_cause": [{"type": "media_type_header_exception",
                                                   "reason": "Invalid media-type value on headers [Accept, Content-Type]"}],
                                   "type": "media_type_header_exception",
                                   "reason": "Invalid media-type value on headers [Accept, Content-Type]",
                                   "caused_by": {"type": "status_exception", "reason": "A compatible version is required "
                                                 f"on both Content-Type and Accept headers. Accept={accept}"}},
                         "status": 400}
        if self.down:
            return 503, _error(503, "cluster unavailable (stand-in is down)")
        if self.require_api_key:
            expected = "ApiKey " + base64.b64encode(self.require_api_key.encode()).decode()
            if headers.get("Authorization") not in (expected, "ApiKey " + self.require_api_key):
                return 401, _error(401, "unable to authenticate with provided credentials and anonymous access is "
                                        "not allowed for this request")
        parts = [unquote(p) for p in urlsplit(path).path.split("/") if p]
        if not parts:
            return 200, {"name": "standin", "cluster_name": "standin", "cluster_uuid": "standin",
                         "version": {"number": self.version, "build_flavor": "default",
                                     "minimum_wire_compatibility_version": "7.17.0",
                                     "minimum_index_compatibility_version": "7.0.0"},
                         "tagline": "You Know, for Search"}
        if parts == ["_bulk"] and method in ("POST", "PUT"):
            return self._bulk(body)
        store = {"_index_template": (self.index_templates, "index_templates", "index_template"),
                 "_component_template": (self.component_templates, "component_templates", "component_template")}
        if parts[0] in store and len(parts) == 2:
            table, key, inner = store[parts[0]]
            return self._template(method, parts[1], body, table, key, inner)
        if parts[:2] == ["_ilm", "policy"] and len(parts) == 3:
            return self._ilm(method, parts[2], body)
        if parts[0] == "_data_stream" and len(parts) == 2 and method == "GET":
            with self.lock:
                if parts[1] not in self.docs:
                    return 404, _error(404, f"no such index [{parts[1]}]")
                return 200, {"data_streams": [{"name": parts[1], "status": "GREEN", "indices": []}]}
        return 400, _error(400, f"stand-in does not implement {method} {path}")

    def _template(self, method, name, body, table, key, inner):
        with self.lock:
            if method == "PUT":
                table[name] = orjson.loads(body)
                return 200, {"acknowledged": True}
            if method == "GET":
                if name not in table:
                    return 404, _error(404, f"{inner.replace('_', ' ')} matching [{name}] not found")
                return 200, {key: [{"name": name, inner: table[name]}]}
        return 400, _error(400, f"method {method}")

    def _ilm(self, method, name, body):
        with self.lock:
            if method == "PUT":
                self.ilm_policies[name] = orjson.loads(body)["policy"]
                return 200, {"acknowledged": True}
            if method == "GET":
                if name not in self.ilm_policies:
                    return 404, _error(404, f"Lifecycle policy not found: {name}")
                return 200, {name: {"version": 1, "modified_date": "2025-01-01T00:00:00.000Z",
                                    "policy": self.ilm_policies[name]}}
        return 400, _error(400, f"method {method}")

    def _bulk(self, body: bytes):
        with self.lock:
            if self.bulk_statuses:
                status = self.bulk_statuses.pop(0)
                return status, _error(status, "rejected execution of coordinating operation" if status == 429
                                      else "stand-in failure")
        lines = [line for line in body.split(b"\n") if line.strip()]
        items = []
        i = 0
        while i < len(lines):
            action = orjson.loads(lines[i])
            op, meta = next(iter(action.items()))
            source = orjson.loads(lines[i + 1])
            i += 2
            index, doc_id = meta["_index"], meta["_id"]
            backing = f".ds-{index}-2025.01.01-000001"
            with self.lock:
                failure = self.item_failures.get(doc_id)
                if failure and failure.get("times", None) != 0:
                    if failure.get("times"):
                        failure["times"] -= 1
                    status = failure["status"]
                    item = {"_index": backing, "_id": doc_id, "status": status,
                            "error": {"type": ERROR_TYPES.get(status, "exception"), "reason": failure["reason"]}}
                elif op == "create" and doc_id in self.docs[index]:
                    status = 409
                    item = {"_index": backing, "_id": doc_id, "status": 409,
                            "error": {"type": "version_conflict_engine_exception",
                                      "reason": f"[{doc_id}]: version conflict, document already exists (current version [1])",
                                      "index_uuid": "standin", "shard": "0", "index": backing}}
                else:
                    self.docs[index][doc_id] = source
                    status = 201
                    item = {"_index": backing, "_id": doc_id, "_version": 1, "result": "created", "status": 201,
                            "_shards": {"total": 1, "successful": 1, "failed": 0}, "_seq_no": 0, "_primary_term": 1}
                self.bulk_items.append((index, doc_id, status))
            items.append({op: item})
        return 200, {"took": 1, "errors": any(next(iter(x.values()))["status"] >= 300 for x in items), "items": items}


def _error(status: int, reason: str) -> dict:
    cause = {"type": ERROR_TYPES.get(status, "exception"), "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def _handler(es: ElasticsearchStandin):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # keep-alive + delayed ACKs would add ~40 ms per request

        def log_message(self, *args):
            pass

        def _serve(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            status, payload = es.handle(self.command, self.path, self.headers, body)
            data = b"" if self.command == "HEAD" else orjson.dumps(payload)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

    return Handler
