"""`aoai-monitor run` hosts the plugged-in components: the OTLP receiver, the web UI and pricing config."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from aoai_monitor.service_api import _find, call
from aoai_monitor.store import Store
from tests.test_otlp_receiver import T0, TOKEN, json_span, post


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_serves_otlp_web_and_prices_with_its_config(tmp_path: Path):
    otlp_port, web_port = _free_port(), _free_port()
    store = tmp_path / "svc.duckdb"
    config = tmp_path / "aoai-monitor.toml"
    config.write_text(f"""
[store]
path = "{store}"
[otlp]
port = {otlp_port}
token = "{TOKEN}"
[web]
port = {web_port}
[pricing]
default_sku = "none"
""")
    log = tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "aoai_monitor.cli", "run", "--config", str(config), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        body = orjson.dumps(json_span("0b" * 8, T0, 42.0, {"gen_ai.operation.name": "chat"}))
        deadline = time.monotonic() + 40
        while True:
            try:
                code, _ = post(f"http://127.0.0.1:{otlp_port}/v1/traces", body)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
                time.sleep(0.2)
        assert code == 200
        # the UI answers on the service's server, and `query` from another process works beside the writer
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10)
        assert denied.value.code == 401  # the service's UI shares the local API's token
        token = _find(str(store))["token"]
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())  # keeps the session cookie
        with browser.open(f"http://127.0.0.1:{web_port}/?token={token}", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        rows = call(str(store), "/api/sql", {"sql": 'SELECT "span.name" FROM spans'}, timeout=10)
        assert json.dumps(rows).count("chat dep") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    with Store(store, read_only=True) as s:
        assert s.cursor().execute('SELECT "aoai.duration_ms" FROM spans').fetchall() == [(42.0,)]
