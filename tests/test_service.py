"""`aoai-monitor run` as real processes: beside query/status, SIGTERM, several instances, kill -9 mid-ingest."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from aoai_monitor.config import EXAMPLE, load
from aoai_monitor.service_api import ServiceUnavailable, call, discovery_path
from aoai_monitor.store import Store
from tests.test_eventhub_input import make_body, write_config

AOAI = [str(Path(sys.executable).parent / "aoai-monitor")]


class Instance:
    """One `aoai-monitor run` process with its own store."""

    def __init__(self, config: Path, store: Path, env: dict, log: Path):
        self.store = store
        self.log = log
        self.proc = subprocess.Popen(AOAI + ["run", "--config", str(config), "--store", str(store), "--quiet"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=open(log, "ab"))

    def status(self) -> dict:
        return call(str(self.store), "/api/status", timeout=5)["partitions"]

    def owned(self) -> set[str]:
        try:
            parts = self.status()
        except ServiceUnavailable:
            return set()
        return {k.rsplit(":", 1)[1] for k, v in parts.items() if v["owned"] and not k.endswith(":*")}

    def records(self) -> int:
        try:
            return sum(v["records"] for v in self.status().values())
        except ServiceUnavailable:
            return 0

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(30)

    def why(self) -> str:
        return self.log.read_text()[-3000:]


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in children.read_text().split()] if children.exists() else []


def wait_for(predicate, timeout: float, what: str, instances=()) -> float:
    started = time.monotonic()
    while not predicate():
        for inst in instances:
            assert inst.proc.poll() is None, f"{what}: instance exited {inst.proc.returncode}: {inst.why()}"
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)
    return time.monotonic() - started


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(AOAI + list(args), capture_output=True, text=True, timeout=60, env=env)


def test_config_example_loads_with_secrets_from_the_environment():
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(EXAMPLE)
    env = {"AOAI_EVENTHUB_CONNECTION_STRING": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;"
                                              "SharedAccessKey=c2VjcmV0;EntityPath=insights-logs-aoai",
           "AOAI_STORAGE_KEY": "a2V5"}
    cfg = load(fh.name, env=env)
    os.unlink(fh.name)
    hub = cfg.eventhub[0]
    assert hub["consumer_group"] == "$Default" and hub["storage_account_container"] == "aoai-monitor-insights-logs-aoai"
    assert hub["storage_account_key"].value == "a2V5" and "a2V5" not in repr(hub) and "a2V5" not in f"{hub}"
    assert hub["start_position"] == "-1" and hub["load_balancing_interval"] == 2.0


def test_the_service_store_has_a_bounded_memory_budget(tmp_path):
    """DuckDB's cache of the store grows with it (its default budget is 80 % of RAM): `run` opens the store
    with [store] memory_limit, 2GiB unless set; a value DuckDB cannot take is a config error that says the fix."""
    import asyncio

    import pytest

    from aoai_monitor.config import SERVICE_MEMORY_LIMIT, ConfigError
    from aoai_monitor.service import Service

    def budget(store_section: str) -> str:
        (tmp_path / "c.toml").write_text(f'[store]\npath = "{tmp_path / "s.duckdb"}"\n{store_section}')
        service, seen = Service(load(tmp_path / "c.toml")), []

        def tick(running) -> None:
            seen.append(running.store.cursor().execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
            running.request_stop()

        asyncio.run(service.run(on_tick=tick))
        return seen[0]

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert ram > 2.5 * 1024 ** 3, "this test expects a machine where 80 % of RAM is more than 2GiB (CI has 24 GiB)"
    assert SERVICE_MEMORY_LIMIT == "2GiB" and budget("") == "2.0 GiB"
    assert budget('memory_limit = "300MB"\n') == "286.1 MiB"
    with pytest.raises(ConfigError, match=r'store.memory_limit: .* write e.g. "2GB"'):
        budget('memory_limit = "lots"\n')


def test_run_beside_query_and_status_then_sigterm(tmp_path, eventhub_standin, azurite, checkpoint_container,
                                                  standin_subprocess_env):
    hub = eventhub_standin
    for p in range(4):
        hub.append_many(p, [make_body(f"q{p}-{i}", 50) for i in range(10)])
    store = tmp_path / "s.duckdb"
    config = write_config(tmp_path / "c.toml", hub, azurite, checkpoint_container, store)
    inst = Instance(config, store, standin_subprocess_env, tmp_path / "run.log")
    try:
        wait_for(lambda: discovery_path(str(store)).exists(), 30, "the discovery file", [inst])
        assert oct(os.stat(str(store) + ".service.token").st_mode & 0o777) == "0o600"
        assert "token" not in orjson.loads(discovery_path(str(store)).read_bytes())
        wait_for(lambda: inst.records() >= 2000, 40, "2000 records", [inst])
        # Another shell: the store is locked by `run`, yet query and status work (through the local API).
        out = cli("query", "--store", str(store), "--format", "json", "SELECT count(*) AS n FROM logs")
        assert out.returncode == 0, out.stderr
        assert orjson.loads(out.stdout)["n"] == 2000
        refused = cli("query", "--store", str(store), "DELETE FROM logs")
        assert refused.returncode == 2 and "only SELECT" in refused.stderr
        status = cli("status", "--store", str(store), "--format", "json")
        assert status.returncode == 0, status.stderr
        rows = [orjson.loads(line) for line in status.stdout.splitlines()]
        assert {r["partition"] for r in rows if r["owned"]} == {"0", "1", "2", "3"}
        assert sum(r["records"] for r in rows) == 2000
        wait_for(lambda: all(v["lag_events"] == 0 for k, v in inst.status().items() if not k.endswith(":*")),
                 20, "lag 0 from the partition properties", [inst])
    finally:
        code = inst.stop(signal.SIGTERM)
    assert code == 0, inst.why()
    assert not discovery_path(str(store)).exists()
    # After the service ended, status reads the stored snapshot straight from the file.
    after = cli("status", "--store", str(store))
    assert after.returncode == 0 and "last stored snapshot" in after.stdout, after.stdout + after.stderr


def test_instances_share_partitions_and_take_over_from_a_killed_one(tmp_path, eventhub_standin, azurite,
                                                                    checkpoint_container, standin_subprocess_env):
    hub = eventhub_standin
    for p in range(4):
        hub.append_many(p, [make_body(f"s{p}-{i}") for i in range(20)])
    config = write_config(tmp_path / "c.toml", hub, azurite, checkpoint_container, tmp_path / "unused.duckdb")
    insts = [Instance(config, tmp_path / f"i{n}.duckdb", standin_subprocess_env, tmp_path / f"i{n}.log") for n in range(3)]
    try:
        def split() -> bool:
            owned = [i.owned() for i in insts]
            return all(owned) and sorted(p for o in owned for p in o) == ["0", "1", "2", "3"]

        wait_for(split, 40, "three instances splitting 4 partitions", insts)
        victim = max(insts, key=lambda i: len(i.owned()))
        lost = victim.owned()
        workers = _children(victim.proc.pid)
        assert workers  # the batch-preparing worker process(es)
        victim.stop(signal.SIGKILL)
        # …which do not outlive their service, even after kill -9
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 10, "orphaned workers to exit")
        survivors = [i for i in insts if i is not victim]
        for p in range(4):
            hub.append_many(p, [make_body(f"t{p}-{i}") for i in range(5)])
        took = wait_for(lambda: lost <= set().union(*(i.owned() for i in survivors)), 20,
                        "survivors taking over the killed instance's partitions", survivors)
        assert took < 15
        wait_for(lambda: all_ids(insts, running=survivors) == 1000, 40, "every record stored", survivors)
    finally:
        for inst in insts:
            inst.stop(signal.SIGTERM)


def all_ids(insts, running=()) -> int:
    """Distinct record ids over all instances' stores (asking running services, reading stopped ones)."""
    from aoai_monitor.service_api import remote_query

    ids: set = set()
    for inst in insts:
        if inst in running:
            try:
                _, rows = remote_query(str(inst.store), "SELECT CAST(id AS VARCHAR) FROM logs")
            except ServiceUnavailable:
                continue
        else:
            with Store(inst.store, read_only=True) as store:
                rows = store.cursor().execute("SELECT CAST(id AS VARCHAR) FROM logs").fetchall()
        ids.update(r[0] for r in rows)
    return len(ids)


def test_kill_9_during_a_100k_ingest_ends_with_every_record_exactly_once(tmp_path, eventhub_standin, azurite,
                                                                         checkpoint_container, standin_subprocess_env):
    hub = eventhub_standin
    for p in range(4):
        hub.append_many(p, [make_body(f"k{p}-{i}", 100) for i in range(250)])  # 100k records
    store = tmp_path / "s.duckdb"
    # Claims stay valid 60 s: resuming quickly after each kill proves the stable owner identity works.
    config = write_config(tmp_path / "c.toml", hub, azurite, checkpoint_container, store, ownership_expiration="60s")
    rng = random.Random(9)
    progress = []
    for round_ in range(4):
        inst = Instance(config, store, standin_subprocess_env, tmp_path / "run.log")
        if round_ == 3:
            wait_for(lambda: done(store, inst), 90, "all 100k records", [inst])
            assert inst.stop(signal.SIGTERM) == 0, inst.why()
            break
        wait_for(lambda: discovery_path(str(store)).exists(), 30, "start", [inst])
        start = time.monotonic()
        wait_for(lambda: inst.records() > 0, 25, f"round {round_} resuming within the 60 s claim", [inst])
        progress.append(time.monotonic() - start)
        time.sleep(rng.uniform(0.2, 2.0))
        inst.stop(signal.SIGKILL)
    with Store(store, read_only=True) as s:
        n, distinct = s.cursor().execute("SELECT count(*), count(DISTINCT id) FROM logs").fetchone()
    assert n == distinct == 100_000
    assert max(progress) < 20


def done(store: Path, inst: Instance) -> bool:
    from aoai_monitor.service_api import remote_query

    try:
        _, rows = remote_query(str(store), "SELECT count(*) FROM logs")
    except ServiceUnavailable:
        return False
    return rows[0][0] >= 100_000
