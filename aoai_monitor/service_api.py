"""The running service's local API, so `query`, `status` (and the UI) work while `run` holds the store.

DuckDB lets one process open a store file for writing and then no other process may open it at all. So
`run` serves read-only SQL and its status on 127.0.0.1, behind a random bearer token kept in a 0600 file,
and writes `<store>.service.json` (pid, host, port, token file; no secret) for other commands to find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, AsyncIterator, Callable, NamedTuple

import orjson

DISCOVERY_SUFFIX = ".service.json"
TOKEN_SUFFIX = ".service.token"


class ServiceUnavailable(RuntimeError):
    """No running service for this store (or it does not answer)."""


def discovery_path(store_path: str) -> Path:
    return Path(str(store_path) + DISCOVERY_SUFFIX)


def write_token(store_path: str) -> tuple[str, Path]:
    """A fresh random token in a file only this user can read."""
    token = secrets.token_urlsafe(32)
    path = Path(str(store_path) + TOKEN_SUFFIX)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token, path


def write_discovery(store_path: str, host: str, port: int, token_path: Path) -> Path:
    path = discovery_path(store_path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "host": host, "port": port, "token_file": str(token_path.resolve()),
                               "store": str(Path(store_path).resolve())}))
    os.replace(tmp, path)
    return path


def remove_discovery(store_path: str) -> None:
    for suffix in (DISCOVERY_SUFFIX, TOKEN_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            Path(str(store_path) + suffix).unlink()


def create_api(store, status_fn: Callable[[], dict], token: str, web_app=None):
    """Starlette app: /api/sql (POST {sql, params?, limit?}), /api/status; the web UI mounted at / when given."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route

    from .query.sql import QueryError, run_query

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return secrets.compare_digest(given, token)

    def denied() -> Response:
        return JSONResponse({"error": "missing or wrong token: send `Authorization: Bearer <token>` with the token "
                                      "from the file named in <store>.service.json"}, status_code=401)

    async def sql(request: Request) -> Response:
        if not authorized(request):
            return denied()
        try:
            body = await request.json()
            text = body["sql"]
        except Exception:
            return JSONResponse({"error": 'send JSON {"sql": "SELECT …", "params": [...], "limit": n}'}, status_code=400)
        import asyncio
        try:
            columns, rows = await asyncio.to_thread(run_query, store, text, body.get("params"), body.get("limit"))
        except QueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return Response(orjson.dumps({"columns": columns, "rows": rows}, default=str), media_type="application/json")

    async def status(request: Request) -> Response:
        if not authorized(request):
            return denied()
        return Response(orjson.dumps(status_fn(), default=str), media_type="application/json")

    routes: list = [Route("/api/sql", sql, methods=["POST"]), Route("/api/status", status)]
    if web_app is not None:
        routes.append(Mount("/", app=web_app))
    return Starlette(routes=routes)


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def make_server(app):
    """A uvicorn server that leaves SIGTERM/SIGINT to the service (which drains inputs first)."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    return _Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))


class LocalApi(NamedTuple):
    host: str
    port: int
    token: str
    web: bool  # the web UI is mounted at /


@contextlib.asynccontextmanager
async def local_api(store, store_path: str, status_fn: Callable[[], dict], host: str = "127.0.0.1", port: int = 0,
                    web_app: Callable[[str], Any] | None = None) -> AsyncIterator[LocalApi]:
    """Serve create_api for a store this process holds (with the UI `web_app(token)` makes, when it makes one),
    findable by other commands through <store>.service.json while the block runs."""
    token, token_path = write_token(store_path)
    sock = bind(host, port)
    host, port = sock.getsockname()[:2]
    web = web_app(token) if web_app is not None else None
    server = make_server(create_api(store, status_fn, token, web))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="api")
    write_discovery(store_path, host, port, token_path)
    try:
        yield LocalApi(host, port, token, web is not None)
    finally:
        remove_discovery(store_path)
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 5)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            task.cancel()


# --- client side (other shells) -------------------------------------------------------------------------

def _find(store_path: str) -> dict:
    path = discovery_path(store_path)
    try:
        info = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        raise ServiceUnavailable(f"no running service found for {store_path} (no {path.name})") from None
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        raise ServiceUnavailable(f"{path.name} names pid {info.get('pid')}, which is not running") from None
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        info["token"] = Path(info["token_file"]).read_text().strip()
    except OSError as exc:
        raise ServiceUnavailable(f"cannot read the service token {info.get('token_file')}: {exc.strerror}; "
                                 "run the command as the user running `aoai-monitor run`") from None
    return info


def call(store_path: str, path: str, payload: dict | None = None, timeout: float = 60.0) -> Any:
    """GET (payload None) or POST JSON to the running service for this store."""
    info = _find(store_path)
    host = info["host"] if ":" not in info["host"] else f"[{info['host']}]"
    req = urllib.request.Request(f"http://{host}:{info['port']}{path}",
                                 data=None if payload is None else orjson.dumps(payload),
                                 headers={"Authorization": f"Bearer {info['token']}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read()).get("error", str(exc))
        except ValueError:
            message = str(exc)
        raise RemoteError(message) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServiceUnavailable(f"the service (pid {info['pid']}) does not answer on port {info['port']}: {exc}") from None


class RemoteError(ValueError):
    """The service answered with an error (e.g. a refused query)."""


def remote_query(store_path: str, sql: str, params: list | None = None, limit: int | None = None) -> tuple[list[str], list[list]]:
    out = call(store_path, "/api/sql", {"sql": sql, "params": params, "limit": limit})
    return out["columns"], [tuple(r) for r in out["rows"]]
