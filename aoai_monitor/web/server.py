"""`aoai-monitor serve` and `aoai-monitor demo`: the web UI on uvicorn over a read-only store.

Binding anywhere but loopback exposes prompts and completions, so it needs an access token: the
configured one, or one generated here and printed once (with the login URL).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
from pathlib import Path

import click

from ..store import Store, StoreError

DEFAULT_PORT = 8765
DEMO_STORE = "aoai-monitor-demo.duckdb"
DEMO_MARK = "demo.generated"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(store_path: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
          echo=click.echo) -> None:
    """Serve the UI until interrupted. Port 0 picks a free port; the printed URL is always the real one."""
    import uvicorn

    from ..query.sql import open_for_queries
    from .app import create_app

    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(24)
        echo(f"access token (shown once; pass --token or AOAI_MONITOR_TOKEN to choose your own): {token}")
    store = open_for_queries(store_path)
    app = create_app(store, token=token)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        store.close()
        raise StoreError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from exc
    sock.listen(2048)  # connections queue from now on, so the printed URL works at once
    real_port = sock.getsockname()[1]
    shown = host if is_loopback(host) or host not in ("0.0.0.0", "::") else socket.gethostname()
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    url = f"http://{shown}:{real_port}/" + (f"?token={token}" if token else "")
    echo(f"aoai-monitor UI: {url}  (Ctrl+C to stop)")
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        store.close()


_HOST = click.option("--host", default="127.0.0.1", show_default=True,
                     help="Address to listen on; anything but loopback requires an access token.")
_PORT = click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="Port (0 = any free port).")
_TOKEN = click.option("--token", envvar="AOAI_MONITOR_TOKEN", default=None,
                      help="Access token (env AOAI_MONITOR_TOKEN); generated and printed when binding beyond loopback.")


def _fail(message: str) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    sys.exit(2)


@click.command("serve")
@click.option("--store", "store_path", default="aoai-monitor.duckdb", show_default=True, envvar="AOAI_MONITOR_STORE",
              help="DuckDB store file (env AOAI_MONITOR_STORE), opened read-only.")
@_HOST
@_PORT
@_TOKEN
def serve_command(store_path: str, host: str, port: int, token: str | None) -> None:
    """Serve the dashboards, Discover and the SQL page for a store (read-only)."""
    try:
        serve(store_path, host, port, token)
    except StoreError as exc:
        _fail(str(exc))


@click.command("demo")
@click.option("--store", "store_path", default=DEMO_STORE, show_default=True, help="Demo store file (replaced if it is a demo store).")
@click.option("--days", type=click.FloatRange(min=1 / 24, max=93), default=7, show_default=True, help="Days of traffic.")
@click.option("--scale", type=click.FloatRange(min=0.001, max=100), default=1.0, show_default=True,
              help="Traffic multiplier (1.0 ≈ 200k log records per week).")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed.")
@click.option("--no-serve", is_flag=True, help="Only generate the store.")
@_HOST
@_PORT
@_TOKEN
def demo_command(store_path: str, days: float, scale: float, seed: int, no_serve: bool, host: str, port: int,
                 token: str | None) -> None:
    """Generate a realistic week of Azure OpenAI traffic into a fresh store and open the UI on it."""
    from ..demo import generate_demo

    path = Path(store_path)
    if path.exists():
        try:
            with Store(store_path, read_only=True) as old:
                is_demo = old.get_state(DEMO_MARK) is not None
        except StoreError as exc:
            _fail(str(exc))
        if not is_demo:
            _fail(f"{store_path} exists and is not a demo store; pass another --store")
        path.unlink()
        Path(store_path + ".wal").unlink(missing_ok=True)
    click.echo(f"generating {days:g} days of demo traffic into {store_path} …")
    with Store(store_path) as store:
        summary = generate_demo(store, days=days, seed=seed, scale=scale, progress=sys.stderr.isatty())
        store.set_state({DEMO_MARK: summary})
    click.echo(f"{summary['requests']:,} requests → {summary['logs']:,} log and {summary['metrics']:,} metric documents "
               f"({summary['start'][:16]} → {summary['end'][:16]} UTC) in {summary['seconds']} s")
    if no_serve:
        return
    try:
        serve(store_path, host, port, token)
    except StoreError as exc:
        _fail(str(exc))
