"""`aoai-monitor run`: the long-running service. One process owns the store; every input, the local API
(and the web UI, the metrics input, alerts, OTLP once installed) run as asyncio tasks beside each other.

Shutdown on SIGTERM/SIGINT: stop pulling, let in-flight batches commit and checkpoint, release Event Hub
partitions (the other instances take them at once), store a last status snapshot, close the store.

Plugging in a component: add `COMPONENTS["<config section>"] = "module:function"`, where
`async def function(service: Service, section: dict)` runs until `service.stopping` is set and uses
`service.store` (commit/cursor), `service.status` (per-partition counters) and `service.log`. The web UI is
different only in being mounted on the API server (`aoai_monitor.web.app:create_app(store, token=...)`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
import time

import click

from .config import Config, ConfigError, load
from .service_api import local_api
from .sources import InputStatus
from .store import Store, StoreError

log = logging.getLogger("aoai_monitor.service")

# Config section → "module:async function(service, section)". Missing modules are reported, not fatal.
COMPONENTS: dict[str, str] = {
    "azure_monitor": "aoai_monitor.sources.azure_monitor:run_input",
    "alerts": "aoai_monitor.alerting.service:run",
    "otlp": "aoai_monitor.sources.otlp:run",
}
WEB_APP = "aoai_monitor.web.app:create_app"


def _resolve(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class Service:
    def __init__(self, config: Config, since: float | None = None):
        self.config = config
        self.log = log
        self.status = InputStatus()
        self.stopping = asyncio.Event()
        self.store: Store | None = None
        self.inputs: list = []
        self.outputs: list = []
        self.api_port: int | None = None
        self.started = time.time()
        if since is not None:
            for s in config.blob_archive:
                s["since"] = since

    def status_snapshot(self) -> dict:
        return {"service": {"pid": _pid(), "started_ms": int(self.started * 1000), "store": self.config.store_path,
                            "inputs": [i.name for i in self.inputs]},
                "partitions": self.status.snapshot()}

    def request_stop(self, *_: object) -> None:
        if not self.stopping.is_set():
            log.info("stopping: draining in-flight batches, then commit, checkpoint and exit")
            self.stopping.set()

    def _build_inputs(self) -> None:
        from .sources.blob_archive import BlobArchiveInput
        from .sources.eventhub import EventHubInput

        self.inputs = ([EventHubInput(s, self.store, self.status, self.stopping) for s in self.config.eventhub]
                       + [BlobArchiveInput(s, self.store, self.status, self.stopping) for s in self.config.blob_archive])

    async def _input_task(self, inp) -> None:
        """Run an input; if it fails, say why and restart it (with backoff) rather than take the service down."""
        delay = 1.0
        while not self.stopping.is_set():
            try:
                await inp.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status.get(inp.name, "*").error = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.error("input %s stopped: %s: %s; restarting in %.0fs (check its settings in %s)", inp.name,
                          type(exc).__name__, str(exc)[:300], delay, self.config.source or "the config")
                try:
                    await asyncio.wait_for(self.stopping.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, 60.0)

    async def _status_writer(self) -> None:
        """Store status snapshots so the UI (and `status` after the service ended) can show them."""
        while True:
            try:
                await asyncio.wait_for(self.stopping.wait(), self.config.status_interval)
            except asyncio.TimeoutError:
                pass
            snapshot = self.status.snapshot()
            if snapshot:
                try:
                    await asyncio.to_thread(self.store.commit, state=snapshot)
                except Exception as exc:
                    log.warning("status not stored: %s", exc)
            if self.stopping.is_set():
                return

    async def _components(self) -> list[asyncio.Task]:
        tasks = []
        sections = dict(self.config.sections)
        if self.config.azure_monitor:
            sections["azure_monitor"] = {"inputs": self.config.azure_monitor}
        for name, section in sections.items():
            if name not in COMPONENTS:
                continue
            try:
                fn = _resolve(COMPONENTS[name])
            except (ImportError, AttributeError):
                log.error("[%s] is configured but this aoai-monitor has no %s component; remove the section or upgrade",
                          name, name)
                continue
            tasks.append(asyncio.create_task(fn(self, section), name=name))
        return tasks

    def _web_app(self, token: str):
        if "web" not in self.config.sections:
            return None
        try:
            create_app = _resolve(WEB_APP)
        except (ImportError, AttributeError):
            log.error("[web] is configured but the web UI is not installed; only the local API is served")
            return None
        return create_app(self.store, token=token)

    async def run(self, on_tick=None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        self.store = Store(self.config.store_path, memory_limit=self.config.memory_limit)
        if "pricing" in self.config.sections:
            from .pricing import configure
            configure(self.store, self.config.sections["pricing"])
        if self.config.elasticsearch:  # every commit also ships to Elasticsearch (docs/elasticsearch.md)
            from . import outputs
            self.outputs = outputs.attach(self.store, self.config.elasticsearch)
        web = self.config.sections.get("web", {})
        try:
            async with local_api(self.store, self.config.store_path, self.status_snapshot,
                                 web.get("host", self.config.api_host), int(web.get("port", self.config.api_port)),
                                 self._web_app) as api:
                self.api_port = api.port
                if api.web:  # printed once, like `serve`: the token is the key to the UI, never logged
                    host = api.host if ":" not in api.host else f"[{api.host}]"
                    print(f"web UI: http://{host}:{api.port}/?token={api.token}", file=sys.stderr, flush=True)
                self._build_inputs()
                log.info("service started: %d input(s), store %s, local API on %s:%d", len(self.inputs),
                         self.config.store_path, api.host, api.port)
                inputs = [asyncio.create_task(self._input_task(i), name=i.name) for i in self.inputs]
                others = await self._components()
                status_task = asyncio.create_task(self._status_writer())
                ticker = asyncio.create_task(_tick(self, on_tick)) if on_tick else None
                await self.stopping.wait()
                await asyncio.gather(*inputs, return_exceptions=True)
                for task in others:
                    task.cancel()
                await asyncio.gather(*others, return_exceptions=True)
                await status_task
                if ticker:
                    ticker.cancel()
        finally:
            if self.outputs:
                from . import outputs
                outputs.close(self.store, self.outputs)
            self.store.close()
            log.info("stopped")


async def _tick(service: Service, on_tick) -> None:
    while True:
        on_tick(service)
        await asyncio.sleep(1)


def _pid() -> int:
    import os
    return os.getpid()


def _status_line(service: Service) -> str:
    snap = service.status.snapshot().values()
    records = sum(s["records"] for s in snap)
    rate = sum(s["records_per_s"] for s in snap)
    lag = sum(s["lag_events"] or 0 for s in snap)
    dead = sum(s["dead_letters"] for s in snap)
    owned = sum(1 for s in snap if s["owned"])
    errors = sum(1 for s in snap if s["error"])
    return (f"running {int(time.time() - service.started)}s · {owned} partition(s) · {records:,} records "
            f"({rate:,.0f}/s) · lag {lag:,} events · {dead:,} dead letters" + (f" · {errors} error(s)" if errors else ""))


@click.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, envvar="AOAI_MONITOR_CONFIG",
              help="TOML config (`aoai-monitor config example` prints one). Env AOAI_MONITOR_CONFIG.")
@click.option("--store", "store_path", default=None, help="Store file; overrides [store] path.")
@click.option("--since", default=None, metavar="DURATION",
              help="Storage archives: read hour blobs from this far back (backfill, e.g. 7d); overrides `since`.")
@click.option("--quiet", is_flag=True, help="No live status line (logs only).")
def run_command(config_path: str | None, store_path: str | None, since: str | None, quiet: bool) -> None:
    """Run the service: collect from every configured input into the store until SIGTERM/Ctrl-C."""
    from .cli import fail
    from .store import parse_duration

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "uamqp", "uvicorn", "elastic_transport"):  # elastic_transport logs every request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load(config_path, store_path=store_path)
        since_s = parse_duration(since) if since else None
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if not (config.eventhub or config.blob_archive or config.sections or config.azure_monitor):
        fail("nothing to run: the config has no [[inputs.*]] sections; `aoai-monitor config example` shows them")
    service = Service(config, since=since_s)
    tty = sys.stderr.isatty() and not quiet
    last = [0.0]

    def tick(svc: Service) -> None:
        if tty:
            sys.stderr.write("\r\x1b[2K" + _status_line(svc))
            sys.stderr.flush()
        elif not quiet and time.time() - last[0] >= 30:
            last[0] = time.time()
            log.info("%s", _status_line(svc))

    from .outputs.elasticsearch import OutputError

    try:
        asyncio.run(service.run(on_tick=tick))
    except (StoreError, OutputError) as exc:
        fail(str(exc))
    if tty:
        sys.stderr.write("\n")


@click.group("config")
def config_group() -> None:
    """The `run` configuration file."""


@config_group.command("example")
def config_example() -> None:
    """Print a commented example config (`aoai-monitor config example > aoai-monitor.toml`)."""
    from .config import EXAMPLE

    click.echo(EXAMPLE, nl=False)


@config_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path: str) -> None:
    """Validate a config file and list its inputs (secrets are not shown)."""
    from .cli import fail

    try:
        config = load(path)
    except ConfigError as exc:
        fail(str(exc))
    click.echo(f"store: {config.store_path}")
    for s in config.eventhub:
        click.echo(f"eventhub {s['name']}: hub {s['eventhub']}, consumer group {s['consumer_group']}, "
                   f"checkpoints in container {s['storage_account_container']}, cloud {s['cloud']['name']}")
    for s in config.blob_archive:
        click.echo(f"blob_archive {s['name']}: containers {s['containers'] or 'insights-*'}, every {s['poll_interval']:.0f}s")
    for s in config.elasticsearch:
        click.echo(f"elasticsearch output {s['name']}: {', '.join(s['hosts']) or 'cloud_id'}, namespace {s['namespace']}, "
                   f"embedded store {'also written' if s['write_store'] else 'not written'}")
    for name in config.sections:
        click.echo(f"[{name}] configured")
