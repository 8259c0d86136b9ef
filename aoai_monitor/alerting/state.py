"""The alert state machine, per rule and group: ok → pending → firing → recovered (→ ok).

Pure: `step` maps (previous state, what the evaluation saw) to the next state and, when the state changed,
a history row for the `alerts` table. Notifications compare where a batch of evaluations ended with what was
last announced (`notifications`), not each row, so a state change is announced exactly once and a
catch-up over many missed evaluations announces only where things ended up.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass

from .evaluate import Result
from .rules import Rule

CURRENT = "alerts.current."  # state key prefix: alerts.current.<rule id>|<group>
_NS = uuid.UUID("6f1c5e0a-7d43-4c56-9a3c-3c1f0b1e9a77")


@dataclass
class GroupState:
    state: str = "ok"  # ok, pending, firing, recovered
    severity: str | None = None
    since_ms: int = 0  # when the current state began
    breaches: int = 0  # consecutive breaching evaluations
    value: float | None = None
    row_id: str | None = None  # history row of the last change
    notified: str | None = None  # severity last announced as firing; None = last news was "not firing"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> "GroupState":
        return cls(**d) if d else cls()


def state_key(rule_id: str, group: str) -> str:
    return f"{CURRENT}{rule_id}|{group}"


def step(prev: GroupState, result: Result, rule: Rule, at_ms: int) -> tuple[GroupState, dict | None]:
    """Next state of one group, and the history row when the state or the firing severity changed."""
    new = GroupState(**prev.to_json())
    new.value = result.value
    if result.severity:
        new.breaches = prev.breaches + 1
        if prev.state == "firing":
            new.severity = result.severity  # a severity change while firing is a change (and is announced)
        elif new.breaches >= rule.pending or result.no_data:
            new.state, new.severity = "firing", result.severity
        else:
            new.state, new.severity = "pending", result.severity
    else:
        new.breaches = 0
        new.severity = None
        new.state = "recovered" if prev.state == "firing" else "ok"
    if (new.state, new.severity) == (prev.state, prev.severity) or (prev.state == "recovered" and new.state == "ok"):
        if prev.state == "recovered" and new.state == "ok":
            new.since_ms = at_ms  # recovered settles into ok quietly: no history row, no notification
        return new, None
    new.since_ms = at_ms
    row_id = str(uuid.uuid5(_NS, f"{rule.id}|{result.group}|{at_ms}|{new.state}|{new.severity}"))
    new.row_id = row_id
    row = {
        "id": row_id, "@timestamp": at_ms, "alert.rule.id": rule.id, "alert.rule.name": rule.name,
        "alert.rule.kind": rule.kind, "alert.group": result.group, "alert.state": new.state,
        "alert.previous_state": prev.state, "alert.severity": new.severity, "alert.value": result.value,
        "alert.threshold": result.threshold, "alert.message": message(rule, result, new.state),
        "alert.no_data": result.no_data, "alert.notify": "none",
    }
    return new, row


def message(rule: Rule, result: Result, state: str) -> str:
    """The one-line summary (notifications add the runbook)."""
    where = f" on {result.group}" if result.group else ""
    if state == "recovered":
        return f"{rule.name}{where} recovered: {result.detail or 'back within limits'}"
    sev = f"{result.severity} " if result.severity else ""
    if result.no_data:
        return f"{rule.name}{where}: {sev}{result.detail}"
    limit = f" (threshold {rule.op} {result.threshold:g})" if result.threshold is not None else ""
    return f"{rule.name}{where}: {sev}{result.detail}{limit}"


def notifications(states: dict[str, GroupState]) -> list[tuple[str, GroupState]]:
    """(group, state) for every group whose news differs from what was last announced, and marks it announced.

    News is "firing at severity X" or "not firing". Escalation (warning → critical) is news; de-escalation is
    not (it would page people for things getting better), and neither is pending.
    """
    out = []
    for group, s in sorted(states.items()):
        news = s.severity if s.state == "firing" else None
        if news == s.notified or (news == "warning" and s.notified == "critical"):
            continue
        s.notified = news
        out.append((group, s))
    return out
