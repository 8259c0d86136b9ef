"""The [alerts] component of `aoai-monitor run`: evaluates rules on their schedules, keeps the alert state
machine per rule and group, scores anomalies and delivers notifications.

Guarantees: the history rows, the new states, the evaluation watermark and the notifications to send
(the outbox) are committed in one transaction, then delivered; a crash between the two resends (ids let
receivers drop repeats) but never loses or duplicates a state change. After downtime the missed
evaluation instants are replayed (at most `max_catch_up` of them) into the history, and only the net
change per group is announced, so catching up does not flood anyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import anomaly as anomaly_mod
from . import notify
from .evaluate import Result, evaluate
from .rules import Rule, RuleError, _ms, parse_rule, parse_rules
from .slo import SLO, parse_slos, rule_for
from .state import CURRENT, GroupState, notifications, state_key, step

log = logging.getLogger("aoai_monitor.alerts")
LAST = "alerts.last."
OUTBOX = "alerts.outbox."
SILENCE = "alerts.silence."
UI_RULE = "alerts.ui_rule."
ERROR = "alerts.error."
PUBLISHED = "alerts.config"
OUTBOX_MAX_AGE_MS = 86_400_000
_NS = uuid.UUID("b0c2a8e4-51f7-4d0e-9c2b-7d8f6e5a4b3c")
_KEYS = {"every", "rules", "slos", "targets", "default_notify", "anomaly", "max_catch_up", "catch_up", "retries",
         "retry_backoff", "ui_url"}


@dataclass
class AlertsConfig:
    every_ms: int = 60_000
    rules: list[Rule] = field(default_factory=list)
    slos: list[SLO] = field(default_factory=list)
    raw_slos: list[dict] = field(default_factory=list)
    targets: dict[str, notify.Target] = field(default_factory=dict)
    default_notify: list[str] = field(default_factory=list)
    anomaly: anomaly_mod.AnomalyConfig | None = None
    max_catch_up: int = 60
    catch_up_ms: int = 6 * 3_600_000
    retries: int = 4
    retry_backoff_s: float = 2.0
    ui_url: str = ""


def parse_section(section: dict, env: dict | None = None) -> AlertsConfig:
    """Validate the [alerts] table (RuleError / ValueError name the key to change)."""
    section = dict(section or {})
    unknown = set(section) - _KEYS
    if unknown:
        raise RuleError(f"alerts: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    cfg = AlertsConfig(every_ms=_ms(section.get("every", "1m"), "alerts", "every"))
    cfg.rules = parse_rules(section.get("rules", []), cfg.every_ms)
    cfg.raw_slos = list(section.get("slos", []))
    cfg.slos = parse_slos(cfg.raw_slos, cfg.every_ms)
    cfg.targets = notify.parse_targets(section.get("targets", {}), env)
    cfg.default_notify = list(section.get("default_notify", list(cfg.targets)))
    if "anomaly" in section:
        cfg.anomaly = anomaly_mod.parse_config(section["anomaly"])
    cfg.max_catch_up = int(section.get("max_catch_up", 60))
    cfg.catch_up_ms = _ms(section.get("catch_up", "6h"), "alerts", "catch_up")
    cfg.retries = int(section.get("retries", 4))
    cfg.retry_backoff_s = float(section.get("retry_backoff", 2.0))
    cfg.ui_url = str(section.get("ui_url", "")).rstrip("/")
    ids = [r.id for r in cfg.rules] + [rule_for(s).id for s in cfg.slos]
    if len(ids) != len(set(ids)):
        raise RuleError(f"alerts: rule and SLO ids must be unique (SLO rules are named slo.<id>): {sorted(ids)}")
    for r in cfg.rules + [rule_for(s) for s in cfg.slos]:
        check_targets(r, cfg)
    return cfg


def check_targets(rule: Rule, cfg: AlertsConfig) -> None:
    missing = [n for n in (rule.notify or cfg.default_notify) if n not in cfg.targets]
    if missing:
        raise RuleError(f"rule {rule.id!r}: notify names unknown target(s) {missing}; define [alerts.targets.<name>] "
                        f"(known: {sorted(cfg.targets) or 'none'})")


def _moved(a: GroupState, b: GroupState) -> bool:
    return (a.state, a.severity, a.breaches, a.since_ms, a.notified) != (b.state, b.severity, b.breaches, b.since_ms, b.notified)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Engine:
    """Evaluation, state and delivery over one store; `clock` returns epoch seconds (tests inject one)."""

    def __init__(self, store, cfg: AlertsConfig, clock=time.time, pricing=None, config_path: str | None = None):
        self.store = store
        self.cfg = cfg
        self.clock = clock
        self.pricing = pricing
        self.config_path = config_path  # where budget rules read [pricing] (default: $AOAI_MONITOR_CONFIG)
        self._failing: dict[str, str] = {}

    # --- rules -----------------------------------------------------------------------------------

    def ui_rules(self) -> list[Rule]:
        out = []
        for key, raw in sorted(self.store.state_items(UI_RULE).items()):
            if raw is None:
                continue
            try:
                out.append(parse_rule(raw, f"UI rule {key[len(UI_RULE):]}", self.cfg.every_ms, origin="ui"))
            except RuleError as exc:
                self._fail(key, f"{exc}; edit or delete it on the Alerts page")
        return out

    def all_rules(self) -> list[Rule]:
        return self.cfg.rules + [rule_for(s) for s in self.cfg.slos] + self.ui_rules()

    def publish(self) -> None:
        """Let the UI (which only has the store) show config rules, SLOs and targets (names and types only)."""
        self.store.commit(state={PUBLISHED: {
            "rules": [r.to_dict() for r in self.cfg.rules] + [rule_for(s).to_dict() for s in self.cfg.slos],
            "slos": self.cfg.raw_slos, "targets": {n: t.type for n, t in self.cfg.targets.items()},
            "default_notify": self.cfg.default_notify,
            "anomaly": None if self.cfg.anomaly is None else {"sensitivity": self.cfg.anomaly.sensitivity,
                                                               "bucket_ms": self.cfg.anomaly.bucket_ms}}})

    def _fail(self, key: str, message: str) -> None:
        if self._failing.get(key) != message:  # say it once, not every minute
            log.error("%s", message)
            self._failing[key] = message
            self.store.commit(state={ERROR + key: {"message": message, "at": int(self.clock() * 1000)}})

    # --- evaluation ------------------------------------------------------------------------------

    def evaluate_due(self, now_ms: int | None = None) -> int:
        """Evaluate every enabled rule whose schedule is due; returns the notifications queued."""
        now_ms = int(self.clock() * 1000) if now_ms is None else now_ms
        rows: list[dict] = []
        state: dict = {}
        for rule in self.all_rules():
            if rule.enabled:
                r, s = self._evaluate_rule(rule, now_ms)
                rows += r
                state.update(s)
        if state:
            self.store.commit(alerts=rows, state=state)  # one transaction: history, states, watermarks, outbox
        return sum(1 for k in state if k.startswith(OUTBOX))

    def _ticks(self, rule: Rule, now_ms: int) -> list[int]:
        aligned = now_ms // rule.every_ms * rule.every_ms
        last = self.store.get_state(LAST + rule.id)
        if last is None:
            return [aligned]
        first = max(last + rule.every_ms, aligned - self.cfg.catch_up_ms // rule.every_ms * rule.every_ms)
        ticks = list(range(first, aligned + 1, rule.every_ms))
        if len(ticks) > self.cfg.max_catch_up:
            log.info("rule %s: %d evaluations missed; replaying the last %d", rule.id, len(ticks), self.cfg.max_catch_up)
            ticks = ticks[-self.cfg.max_catch_up:]
        return ticks

    def _evaluate_rule(self, rule: Rule, now_ms: int) -> tuple[list[dict], dict]:
        """History rows and state entries (states, watermark, outbox) of one rule's due evaluations."""
        ticks = self._ticks(rule, now_ms)
        if not ticks:
            return [], {}
        prefix = CURRENT + rule.id + "|"
        before = {k[len(prefix):]: GroupState.from_json(v) for k, v in self.store.state_items(prefix).items() if v}
        states = dict(before)
        rows: list[dict] = []
        for t in ticks:
            try:
                results = evaluate(self.store, rule, t, self._pricing_for(rule))
            except RuleError as exc:
                self._fail(rule.id, str(exc))
                return [], {}
            if rule.id in self._failing:
                del self._failing[rule.id]
                self.store.commit(state={ERROR + rule.id: None})
            seen = {r.group for r in results}
            if rule.no_data != "keep":
                results += [Result(g, None, None, None, detail="no data in the window")
                            for g, s in states.items() if g not in seen and s.state != "ok"]
            for res in results:
                new, row = step(states.get(res.group, GroupState()), res, rule, t)
                states[res.group] = new
                if row:
                    row["alert.notify"] = "catch-up" if t != ticks[-1] else "none"
                    rows.append(row)
        outbox = {}
        for group, final in notifications(states):
            row = next((r for r in reversed(rows) if r["id"] == final.row_id), None)
            silenced = self.silenced(rule.id, group, now_ms)
            msg = self.message(rule, group, final, row, caught_up=len(ticks) > 1)
            if row is not None:
                row["alert.notify"] = "silenced" if silenced else "pending"
                row["alert.targets"] = rule.notify or self.cfg.default_notify
            if not silenced:
                outbox[OUTBOX + msg["id"]] = {"msg": msg, "targets": rule.notify or self.cfg.default_notify,
                                              "row_id": final.row_id, "row_ts": final.since_ms, "created": now_ms}
        # only groups whose state moved (the value alone changes every evaluation and is not worth a write)
        state = {state_key(rule.id, g): s.to_json() for g, s in states.items()
                 if g not in before or _moved(before[g], s)}
        state[LAST + rule.id] = ticks[-1]
        return rows, {**state, **outbox}

    def _pricing_for(self, rule: Rule):
        if rule.kind == "budget" and self.pricing is None:
            from ..pricing import load_pricing
            self.pricing = load_pricing(self.config_path)
        return self.pricing

    def silenced(self, rule_id: str, group: str, now_ms: int) -> bool:
        for key in (f"{SILENCE}{rule_id}|{group}", f"{SILENCE}{rule_id}|*"):
            s = self.store.get_state(key)
            if s and s.get("until", 0) > now_ms:
                return True
        return False

    def message(self, rule: Rule, group: str, final: GroupState, row: dict | None, caught_up: bool) -> dict:
        firing = final.state == "firing"
        summary = row["alert.message"] if row else f"{rule.name}{' on ' + group if group else ''} is {final.state}"
        if caught_up:
            summary += f" (state since {_iso(final.since_ms)}, announced after catching up on missed evaluations)"
        mid = str(uuid.uuid5(_NS, f"{rule.id}|{group}|{final.since_ms}|{final.state}|{final.severity}"))
        return {"id": mid, "rule": {"id": rule.id, "name": rule.name, "kind": rule.kind}, "group": group,
                "labels": dict(p.split("=", 1) for p in group.split(",")) if group else {},
                "state": "firing" if firing else "recovered", "severity": final.severity if firing else None,
                "value": final.value, "threshold": row["alert.threshold"] if row else None, "summary": summary,
                "runbook": rule.runbook, "since": _iso(final.since_ms),
                "url": f"{self.cfg.ui_url}/#alerts" if self.cfg.ui_url else None}

    # --- delivery --------------------------------------------------------------------------------

    async def deliver_outbox(self) -> dict[str, int]:
        """Send every queued notification; keep what failed for the next tick (for up to a day)."""
        sent = failed = 0
        now_ms = int(self.clock() * 1000)
        for key, item in sorted(self.store.state_items(OUTBOX).items()):
            if not item:
                continue
            remaining = []
            for name in item["targets"]:
                target = self.cfg.targets.get(name)
                if target is None:
                    log.error("notification %s: target %r is not configured; define [alerts.targets.%s]",
                              item["msg"]["id"], name, name)
                    continue
                try:
                    await notify.send(target, item["msg"], self.cfg.retries, self.cfg.retry_backoff_s)
                except notify.NotifyError as exc:
                    log.warning("notification %s not delivered: %s", item["msg"]["id"], exc)
                    remaining.append(name)
            expired = now_ms - item["created"] > OUTBOX_MAX_AGE_MS
            status = "sent" if not remaining else "failed" if expired else "retrying"
            sent += not remaining
            failed += bool(remaining)
            await asyncio.to_thread(self._settle, key, item, remaining if status == "retrying" else None, status)
        return {"sent": sent, "failed": failed}

    def _settle(self, key: str, item: dict, remaining: list[str] | None, status: str) -> None:
        with self.store.transaction() as tx:
            if remaining:
                tx.set_state({key: {**item, "targets": remaining}})
            else:
                tx.con.execute("DELETE FROM state WHERE key = ?", [key])
            if item.get("row_id"):
                tx.con.execute('UPDATE alerts SET "alert.notify" = ? WHERE id = ?::UUID AND "@timestamp" = epoch_ms(?::BIGINT)',
                               [status, item["row_id"], item["row_ts"]])

    # --- one scheduler tick ------------------------------------------------------------------------

    async def tick(self) -> None:
        now_ms = int(self.clock() * 1000)
        if self.cfg.anomaly and self.cfg.anomaly.enabled:
            await asyncio.to_thread(anomaly_mod.step, self.store, self.cfg.anomaly, now_ms)
        await asyncio.to_thread(self.evaluate_due, now_ms)
        await self.deliver_outbox()

    def next_wait_s(self) -> float:
        step_ms = min([r.every_ms for r in self.all_rules() if r.enabled] or [self.cfg.every_ms])
        now_ms = int(self.clock() * 1000)
        return max(0.05, (step_ms - now_ms % step_ms) / 1000)


async def run(service, section: dict) -> None:
    """`aoai-monitor run` component: evaluate until the service stops."""
    try:
        cfg = parse_section(section)
    except (RuleError, ValueError) as exc:
        log.error("[alerts] not started: %s", exc)
        return
    config = getattr(service, "config", None)
    engine = Engine(service.store, cfg, clock=getattr(service, "clock", time.time),
                    config_path=getattr(config, "source", None) or None)
    await asyncio.to_thread(engine.publish)
    log.info("alerts: %d rule(s), %d SLO(s), %d target(s)", len(cfg.rules), len(cfg.slos), len(cfg.targets))
    while not service.stopping.is_set():
        try:
            await engine.tick()
        except Exception:  # one bad tick must not stop alerting; the next one retries
            log.exception("alert evaluation failed; retrying at the next tick (check the rule named above)")
        try:
            await asyncio.wait_for(service.stopping.wait(), engine.next_wait_s())
        except asyncio.TimeoutError:
            pass
