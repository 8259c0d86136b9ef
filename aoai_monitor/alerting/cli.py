"""`aoai-monitor alerts init|list|eval|test-send|silence`."""

from __future__ import annotations

import asyncio
import os
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import click

from ..store import DEFAULT_PATH, parse_duration

CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="AOAI_MONITOR_CONFIG",
                             default=None, help="The `run` TOML config (env AOAI_MONITOR_CONFIG).")
STORE_OPTION = click.option("--store", "store_path", default=None,
                            help="Store file (default: [store] path of the config, else env AOAI_MONITOR_STORE).")


def _fail(message: str) -> None:
    from ..cli import fail
    fail(message)


def _load(config_path: str | None, store_path: str | None):
    """(alerts config, store path) from the config file."""
    from ..config import ConfigError, load
    from .rules import RuleError
    from .service import parse_section

    try:
        config = load(config_path, store_path=store_path)
        return parse_section(config.sections.get("alerts", {})), config.store_path
    except (ConfigError, RuleError, ValueError) as exc:
        _fail(str(exc))


@click.group("alerts")
def alerts() -> None:
    """Alert rules, SLOs and anomaly detection (docs/alerts.md)."""


@alerts.command("init")
@CONFIG_OPTION
@click.option("--only", default=None, help="Comma-separated template ids (default: all; see --list).")
@click.option("--notify", default=None, help="Comma-separated target names for the rules (default: [alerts] default_notify).")
@click.option("--print", "print_only", is_flag=True, help="Print the [[alerts.rules]] blocks instead of writing them.")
@click.option("--list", "list_only", is_flag=True, help="List the built-in templates and exit.")
def init(config_path: str | None, only: str | None, notify: str | None, print_only: bool, list_only: bool) -> None:
    """Enable the built-in rule templates: append them to the config file (rules already there are kept)."""
    from .templates import TEMPLATES, to_toml

    if list_only:
        for t in TEMPLATES:
            click.echo(f"{t['id']:22s} {t['name']}")
        return
    wanted = [t for t in TEMPLATES if not only or t["id"] in only.split(",")]
    unknown = set((only or "").split(",")) - {t["id"] for t in TEMPLATES} - {""}
    if unknown:
        _fail(f"unknown template(s) {sorted(unknown)}; `aoai-monitor alerts init --list` shows them")
    targets = notify.split(",") if notify else None
    if print_only:
        click.echo(to_toml(wanted, targets), nl=False)
        return
    if not config_path:
        _fail("give --config PATH (or set AOAI_MONITOR_CONFIG), or use --print and paste the output into your config")
    path = Path(config_path)
    text = path.read_text() if path.exists() else ""
    try:
        present = {r.get("id") for r in tomllib.loads(text).get("alerts", {}).get("rules", [])}
    except tomllib.TOMLDecodeError as exc:
        _fail(f"{path}: not valid TOML ({exc}); fix it first")
    new = [t for t in wanted if t["id"] not in present]
    if not new:
        click.echo(f"{path}: every requested template is already there")
        return
    updated = text + ("\n" if text and not text.endswith("\n") else "") + "\n# Built-in alert templates (aoai-monitor alerts init)\n" + to_toml(new, targets)
    try:
        from .service import parse_section
        parse_section(tomllib.loads(updated).get("alerts", {}))
    except (ValueError, TypeError) as exc:  # never leave a config that `run` would refuse (RuleError is a ValueError)
        _fail(f"not written: the result would not validate ({exc}); define the targets first or pass --notify")
    path.write_text(updated)
    click.echo(f"{path}: added {len(new)} rule(s): {', '.join(t['id'] for t in new)}"
               + (f" (kept {len(wanted) - len(new)} already present)" if len(wanted) > len(new) else ""))
    if any(t["id"] in ("cost-budget", "token-budget-daily") for t in new):
        click.echo("  set monthly_budget (cost-budget) and warning/critical (token-budget-daily) to your budgets")


@alerts.command("list")
@CONFIG_OPTION
@STORE_OPTION
def list_rules(config_path: str | None, store_path: str | None) -> None:
    """Rules (config, SLOs, UI) with their current state per group."""
    from ..store import Store, StoreError
    from .service import UI_RULE, Engine

    cfg, path = _load(config_path, store_path)
    try:
        store = Store(path, read_only=True)
    except StoreError as exc:
        _fail(str(exc))
    with store:
        engine = Engine(store, cfg)
        states = store.state_items("alerts.current.")
        ui = store.state_items(UI_RULE)
        for rule in cfg.rules + [r for r in engine.all_rules() if r.origin != "config"]:
            if rule.origin == "ui" and not ui.get(UI_RULE + rule.id):
                continue
            click.echo(f"{rule.id}  [{rule.origin}{'' if rule.enabled else ', disabled'}]  {rule.name}")
            for key, st in sorted(states.items()):
                if st and key.startswith(f"alerts.current.{rule.id}|") and st["state"] != "ok":
                    group = key.split("|", 1)[1] or "(all)"
                    click.echo(f"    {group}: {st['state']} {st['severity'] or ''} value={st['value']}")


@alerts.command("eval")
@CONFIG_OPTION
@STORE_OPTION
@click.option("--at", "at", default=None, help="Evaluate as of this UTC time (ISO, e.g. 2025-03-10T14:00:00), default now.")
@click.option("--rule", "rule_id", default=None, help="Only this rule id.")
def eval_rules(config_path: str | None, store_path: str | None, at: str | None, rule_id: str | None) -> None:
    """Dry run: evaluate the rules once and print what each group is at (nothing stored or sent)."""
    from ..store import Store, StoreError
    from .evaluate import evaluate
    from .rules import RuleError
    from .service import Engine

    cfg, path = _load(config_path, store_path)
    at_ms = _when(at)
    try:
        store = Store(path, read_only=True)
    except StoreError as exc:
        _fail(str(exc))
    with store:
        engine = Engine(store, cfg, config_path=config_path)
        rules = [r for r in engine.all_rules() if not rule_id or r.id == rule_id]
        if not rules:
            _fail(f"no rule {rule_id!r}" if rule_id else "no rules: `aoai-monitor alerts init --config …` adds the templates")
        for rule in rules:
            try:
                results = evaluate(store, rule, at_ms, engine._pricing_for(rule))
            except RuleError as exc:
                click.echo(f"{rule.id}: ERROR {exc}")
                continue
            click.echo(f"{rule.id}: {len(results)} group(s)")
            for r in results:
                mark = click.style(r.severity.upper(), fg="red" if r.severity == "critical" else "yellow") if r.severity else "ok"
                click.echo(f"    {r.group or '(all)'}: {mark}  {r.detail}")


@alerts.command("test-send")
@CONFIG_OPTION
@click.argument("target")
def test_send(config_path: str | None, target: str) -> None:
    """Send a test notification to TARGET (a name from [alerts.targets])."""
    from . import notify

    cfg, _ = _load(config_path, None)
    t = cfg.targets.get(target)
    if t is None:
        _fail(f"no target {target!r}; configured: {sorted(cfg.targets) or 'none'} ([alerts.targets.<name>])")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    msg = {"id": f"test-{int(time.time())}", "rule": {"id": "test", "name": "aoai-monitor test notification", "kind": "test"},
           "group": "", "labels": {}, "state": "firing", "severity": "warning", "value": None, "threshold": None,
           "summary": f"This is a test from aoai-monitor on {os.uname().nodename}: target {target!r} works.",
           "runbook": "Nothing to do.", "since": now, "url": f"{cfg.ui_url}/#alerts" if cfg.ui_url else None}
    try:
        attempts = asyncio.run(notify.send(t, msg, cfg.retries, cfg.retry_backoff_s))
    except notify.NotifyError as exc:
        _fail(str(exc))
    click.echo(f"sent to {target!r} ({t.type}) in {attempts} attempt(s)")


@alerts.command("silence")
@click.argument("rule_id")
@click.option("--group", default="*", show_default=True, help="Group to silence, e.g. aoai.deployment=gpt-4o; * = all groups.")
@click.option("--for", "duration", default=None, help="How long, e.g. 2h.")
@click.option("--until", "until", default=None, help="Until this UTC time (ISO).")
@click.option("--clear", is_flag=True, help="Remove the silence.")
@click.option("--reason", default="", help="Why (shown on the Alerts page).")
@CONFIG_OPTION
@STORE_OPTION
def silence(rule_id: str, group: str, duration: str | None, until: str | None, clear: bool, reason: str,
            config_path: str | None, store_path: str | None) -> None:
    """Mute notifications of a rule (state changes are still recorded). Needs the store: stop `run` or use the UI."""
    from ..store import Store, StoreError
    from .service import SILENCE

    _, path = _load(config_path, store_path)
    if not clear and not (duration or until):
        _fail("give --for DURATION, --until TIME or --clear")
    until_ms = None
    if not clear:
        until_ms = int(time.time() * 1000 + parse_duration(duration) * 1000) if duration else _when(until)
    try:
        store = Store(path or DEFAULT_PATH)
    except StoreError as exc:
        _fail(f"{exc} (while `run` is running, silence from the Alerts page)")
    with store:
        store.commit(state={f"{SILENCE}{rule_id}|{group}": None if clear else
                            {"until": until_ms, "reason": reason, "by": "cli", "rule": rule_id, "group": group}})
    click.echo(f"{rule_id} [{group}]: " + ("silence removed" if clear else
               f"silenced until {datetime.fromtimestamp(until_ms / 1000, timezone.utc):%Y-%m-%d %H:%M} UTC"))


def _when(text: str | None) -> int:
    if not text:
        return int(time.time() * 1000)
    try:
        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{text!r}: use an ISO time such as 2025-03-10T14:00:00")
    return int((d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp() * 1000)
