"""Notifications through real local receivers (aiosmtpd SMTP, HTTP webhooks), the CLI, config validation,
budget rules and the `run` component."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from datetime import datetime, timezone
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from aoai_monitor.alerting import notify
from aoai_monitor.alerting import simulate as sim
from aoai_monitor.alerting.rules import RuleError, parse_rule
from aoai_monitor.alerting.service import Engine, parse_section, run
from aoai_monitor.cli import main
from aoai_monitor.store import Store
from tests.test_alert_templates import Clock, Receiver

MSG = {"id": "m-1", "rule": {"id": "quota-429-rate", "name": "Throttling (HTTP 429) rate", "kind": "threshold"},
       "group": "aoai.deployment=gpt-4o", "labels": {"aoai.deployment": "gpt-4o"}, "state": "firing",
       "severity": "critical", "value": 23.5, "threshold": 20.0, "summary": "429 share 23.5 %",
       "runbook": "Raise the quota.", "since": "2025-03-12T10:10:00Z", "url": "http://127.0.0.1:8080/#alerts"}


class Inbox:
    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"

    def __init__(self):
        self.messages = []


@pytest.fixture
def smtp():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


async def test_email_reaches_a_real_smtp_server(smtp):
    inbox, port = smtp
    targets = notify.parse_targets({"mail": {"type": "email", "host": "127.0.0.1", "port": port, "security": "none",
                                             "from": "alerts@example.com", "to": ["oncall@example.com"]}})
    assert await notify.send(targets["mail"], MSG) == 1
    (sender, rcpts, em), = inbox.messages
    assert sender == "alerts@example.com" and rcpts == ["oncall@example.com"]
    assert em["Subject"] == "[FIRING critical] Throttling (HTTP 429) rate · aoai.deployment=gpt-4o"
    body = em.get_content()
    assert "What to do: Raise the quota." in body and "429 share 23.5 %" in body


async def test_slack_teams_and_generic_webhooks(receiver):
    targets = notify.parse_targets({k: {"type": k, "url": receiver.url} for k in ("webhook", "slack", "teams")})
    for name in ("webhook", "slack", "teams"):
        await notify.send(targets[name], MSG)
    generic, slack, teams = receiver.bodies
    assert generic == MSG
    assert slack["text"].startswith("[FIRING critical] Throttling") and slack["blocks"][0]["type"] == "header"
    card = teams["attachments"][0]
    assert teams["type"] == "message" and card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["actions"][0]["url"] == MSG["url"]
    assert {"title": "Value", "value": "23.5"} in card["content"]["body"][2]["facts"]


async def test_unreachable_target_fails_after_retries_without_leaking_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    t = notify.parse_targets({"hook": {"type": "webhook", "url": f"http://127.0.0.1:{port}/x?token=SECRET"}})["hook"]
    started = time.monotonic()
    with pytest.raises(notify.NotifyError) as err:
        await notify.send(t, MSG, attempts=3, backoff_s=0.05)
    assert time.monotonic() - started >= 0.15  # backed off 0.05 + 0.1
    assert "SECRET" not in str(err.value) and "hook" in str(err.value) and "check" in str(err.value)
    assert "SECRET" not in repr(t)


def test_config_errors_say_what_to_fix(monkeypatch):
    with pytest.raises(RuleError, match="warning.*critical"):
        parse_rule({"id": "x", "agg": "count"}, "alerts.rules[0]")
    with pytest.raises(RuleError, match="p95\\(field\\)"):
        parse_rule({"id": "x", "agg": "median(x)", "warning": 1}, "alerts.rules[0]")
    with pytest.raises(RuleError, match="unknown target.*alerts.targets"):
        parse_section({"rules": [{"id": "x", "warning": 1, "notify": ["pager"]}]})
    with pytest.raises(ValueError, match="clear text"):
        notify.parse_targets({"m": {"type": "email", "host": "smtp.example.com", "security": "none", "from": "a@b",
                                    "to": ["c@d"], "password": "pw"}})
    with pytest.raises(ValueError, match="HOOK_URL is not set"):
        notify.parse_targets({"h": {"type": "slack", "url_env": "HOOK_URL"}}, env={})
    t = notify.parse_targets({"h": {"type": "slack", "url_env": "HOOK_URL"}}, env={"HOOK_URL": "https://hooks.example/T/abc"})["h"]
    assert t.url.value == "https://hooks.example/T/abc" and "abc" not in f"{t}"


def test_cli_init_eval_test_send_and_silence(tmp_path, receiver, smtp):
    inbox, port = smtp
    store_path = tmp_path / "s.duckdb"
    config = tmp_path / "aoai.toml"
    config.write_text(f'[store]\npath = "{store_path}"\n\n[alerts]\nretry_backoff = 0.01\n'
                      f'[alerts.targets.ops]\ntype = "webhook"\nurl = "{receiver.url}"\n'
                      f'[alerts.targets.mail]\ntype = "email"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
                      'from = "a@example.com"\nto = ["b@example.com"]\n')
    end = int(datetime(2025, 3, 12, 12, tzinfo=timezone.utc).timestamp() * 1000)
    logs, metrics = sim.generate(end - 3_600_000, end, (sim.Incident("throttle", "gpt-4o-ptu", end - 1_800_000, end, 1.6),),
                                 seed=2, scale=0.5)
    with Store(store_path) as s:
        s.pricer = None
        sim.load_into(s, logs, metrics)
    cli = CliRunner()
    out = cli.invoke(main, ["alerts", "init", "--config", str(config), "--only", "quota-429-rate,ptu-utilization"])
    assert out.exit_code == 0 and "added 2 rule(s)" in out.output, out.output
    again = cli.invoke(main, ["alerts", "init", "--config", str(config), "--only", "quota-429-rate"])
    assert "already there" in again.output
    ev = cli.invoke(main, ["alerts", "eval", "--config", str(config), "--at", "2025-03-12T12:00:00"])
    assert ev.exit_code == 0, ev.output
    assert "aoai.deployment=gpt-4o-ptu: CRITICAL" in ev.output and "gpt-4o-ptu: CRITICAL" in ev.output.split("ptu-utilization")[1]
    sent = cli.invoke(main, ["alerts", "test-send", "--config", str(config), "ops"])
    assert sent.exit_code == 0 and receiver.bodies[-1]["rule"]["id"] == "test"
    mailed = cli.invoke(main, ["alerts", "test-send", "--config", str(config), "mail"])
    assert mailed.exit_code == 0 and inbox.messages[-1][2]["Subject"].startswith("[FIRING warning] aoai-monitor test")
    missing = cli.invoke(main, ["alerts", "test-send", "--config", str(config), "pager"])
    assert missing.exit_code == 2 and "configured: ['mail', 'ops']" in missing.output
    sil = cli.invoke(main, ["alerts", "silence", "quota-429-rate", "--for", "2h", "--config", str(config)])
    assert sil.exit_code == 0, sil.output
    with Store(store_path, read_only=True) as s:
        assert s.get_state("alerts.silence.quota-429-rate|*")["until"] > time.time() * 1000


def test_cost_budget_rule_uses_the_pricing_forecast(tmp_path):
    end = int(datetime(2025, 3, 12, 12, tzinfo=timezone.utc).timestamp() * 1000)
    logs, metrics = sim.generate(end - 6 * 3_600_000, end, seed=4, scale=0.3)
    with Store(tmp_path / "b.duckdb") as store:  # pricer on: costs at ingest, as in production
        sim.load_into(store, logs, metrics)
        spent = store.cursor().execute('SELECT sum("aoai.cost.total") FROM logs').fetchone()[0]
        assert spent and spent > 0
        cfg = parse_section({"rules": [
            {"id": "tight", "kind": "budget", "monthly_budget": spent / 2, "measure": "spent_pct", "warning": 80, "critical": 100},
            {"id": "loose", "kind": "budget", "monthly_budget": spent * 1000, "measure": "forecast_pct", "warning": 90, "critical": 100}]})
        engine = Engine(store, cfg, clock=Clock(end))
        engine.evaluate_due()
        states = {k.split(".")[-1]: v["state"] for k, v in store.state_items("alerts.current.").items()}
        assert states == {"tight|": "firing", "loose|": "ok"}


async def test_run_component_evaluates_on_its_schedule(tmp_path, receiver, caplog):
    now = int(time.time() * 1000)
    # wall-clock data (run() reads the real clock): busy enough for any hour and weekday
    logs, _ = sim.generate(now - 600_000, now, (sim.Incident("errors", "gpt-4o", now - 660_000, now, 0.5),), seed=5,
                           scale=30, deployments=sim.DEPLOYMENTS[:1])

    class Svc:  # what service.Service gives a component
        def __init__(self, store):
            self.store, self.stopping, self.log = store, asyncio.Event(), logging.getLogger("test")

    with Store(tmp_path / "r.duckdb") as store:
        store.pricer = None
        sim.load_into(store, logs, [])
        svc = Svc(store)
        section = {"every": "1s", "retry_backoff": 0.01, "targets": {"ops": {"type": "webhook", "url": receiver.url}},
                   "rules": [{"id": "errors", "agg": "ratio(aoai.status_code >= 500)", "group_by": ["aoai.deployment"],
                              "window": "15m", "warning": 10, "critical": 30}]}
        task = asyncio.create_task(run(svc, section))
        for _ in range(300):
            if receiver.bodies:
                break
            await asyncio.sleep(0.05)
        svc.stopping.set()
        await asyncio.wait_for(task, 5)
        assert [(b["rule"]["id"], b["group"], b["severity"]) for b in receiver.bodies] == [("errors", "aoai.deployment=gpt-4o", "critical")]
        assert store.get_state("alerts.config")["targets"] == {"ops": "webhook"}
        assert "SECRET-TOKEN" not in json.dumps(store.state_items("alerts."))
