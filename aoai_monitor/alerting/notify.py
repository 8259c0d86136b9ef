"""Notification targets: generic JSON webhook, Slack- and Teams-compatible webhooks, e-mail over SMTP.

Targets are `[alerts.targets.<name>]` tables. Webhook URLs carry tokens and SMTP passwords are secrets:
both are wrapped in config.Secret and never appear in logs, errors or the `alerts` table (targets are
named, not addressed). Delivery is retried with exponential backoff; a target that still fails raises
NotifyError with the target's name and what to check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage

from ..config import Secret, reveal

TYPES = ("webhook", "slack", "teams", "email")
_KEYS = {"type", "url", "url_env", "headers", "host", "port", "security", "username", "password", "password_env",
         "from", "to", "timeout"}
_COLORS = {"critical": "#d13438", "warning": "#ffaa44", None: "#107c10"}


class NotifyError(RuntimeError):
    """A delivery that failed after its retries; the text never contains URLs or passwords."""


@dataclass
class Target:
    name: str
    type: str
    url: Secret | None = None
    headers: dict = field(default_factory=dict)
    host: str = ""
    port: int = 0
    security: str = "starttls"
    username: str = ""
    password: Secret | None = None
    sender: str = ""
    to: list[str] = field(default_factory=list)
    timeout: float = 10.0


def _secret(raw: dict, key: str, where: str, env: dict) -> Secret | None:
    if raw.get(f"{key}_env"):
        name = raw[f"{key}_env"]
        if name not in env:
            raise ValueError(f"{where}.{key}_env: environment variable {name} is not set; export it")
        return Secret(env[name])
    value = raw.get(key)
    return Secret(reveal(value)) if value else None


def parse_targets(section: dict, env: dict | None = None) -> dict[str, Target]:
    """[alerts.targets.<name>] tables → Targets (ValueError naming the key to fix)."""
    env = dict(os.environ if env is None else env)
    out = {}
    for name, raw in (section or {}).items():
        where = f"alerts.targets.{name}"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: a table with type = \"webhook\" | \"slack\" | \"teams\" | \"email\"")
        unknown = set(raw) - _KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        kind = raw.get("type")
        if kind not in TYPES:
            raise ValueError(f"{where}.type = {kind!r}: use one of {', '.join(TYPES)}")
        t = Target(name=name, type=kind, timeout=float(raw.get("timeout", 10)))
        if kind == "email":
            t.host, t.sender = str(raw.get("host", "")), str(raw.get("from", ""))
            t.to = raw.get("to") if isinstance(raw.get("to"), list) else [raw["to"]] if raw.get("to") else []
            if not (t.host and t.sender and t.to):
                raise ValueError(f"{where}: e-mail needs host, from and to (a list of addresses)")
            t.security = raw.get("security", "starttls")
            if t.security not in ("starttls", "ssl", "none"):
                raise ValueError(f"{where}.security = {t.security!r}: use starttls (port 587), ssl (port 465) or none")
            t.port = int(raw.get("port", {"ssl": 465, "starttls": 587, "none": 25}[t.security]))
            t.username = str(raw.get("username", ""))
            t.password = _secret(raw, "password", where, env)
            if t.password and t.security == "none" and not _loopback(t.host):
                raise ValueError(f"{where}: security = \"none\" would send the SMTP password in clear text to {t.host}; "
                                 "use starttls or ssl")
        else:
            t.url = _secret(raw, "url", where, env)
            if not t.url or not t.url.value.startswith(("https://", "http://")):
                raise ValueError(f"{where}: set url (or url_env naming an environment variable) to the http(s) webhook URL")
            t.headers = {str(k): str(v) for k, v in (raw.get("headers") or {}).items()}
        out[name] = t
    return out


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# --- rendering ----------------------------------------------------------------------------------------

def title(msg: dict) -> str:
    state = msg["state"].upper()
    sev = f" {msg['severity']}" if msg.get("severity") and msg["state"] == "firing" else ""
    return f"[{state}{sev}] {msg['rule']['name']}" + (f" · {msg['group']}" if msg.get("group") else "")


def text(msg: dict) -> str:
    lines = [title(msg), msg["summary"]]
    if msg.get("runbook") and msg["state"] != "recovered":
        lines.append(f"What to do: {msg['runbook']}")
    if msg.get("url"):
        lines.append(f"Open: {msg['url']}")
    lines.append(f"Rule {msg['rule']['id']} · since {msg['since']}")
    return "\n".join(lines)


def render(target: Target, msg: dict) -> dict:
    """The JSON body each webhook flavour expects."""
    if target.type == "slack":
        return {"text": text(msg), "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title(msg)[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(text(msg).split("\n")[1:])}}]}
    if target.type == "teams":
        facts = [{"title": "Rule", "value": msg["rule"]["id"]}, {"title": "Group", "value": msg.get("group") or "—"},
                 {"title": "Value", "value": "—" if msg.get("value") is None else f"{msg['value']:.4g}"},
                 {"title": "Since", "value": msg["since"]}]
        body = [{"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": True, "text": title(msg)},
                {"type": "TextBlock", "wrap": True, "text": msg["summary"]},
                {"type": "FactSet", "facts": facts}]
        if msg.get("runbook") and msg["state"] != "recovered":
            body.append({"type": "TextBlock", "wrap": True, "text": f"What to do: {msg['runbook']}"})
        card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                "version": "1.4", "body": body}
        if msg.get("url"):
            card["actions"] = [{"type": "Action.OpenUrl", "title": "Open aoai-monitor", "url": msg["url"]}]
        return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                    "content": card}]}
    return msg


# --- delivery ---------------------------------------------------------------------------------------

def _post(target: Target, body: dict) -> None:
    data = json.dumps(body, default=str).encode()
    req = urllib.request.Request(target.url.value, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "aoai-monitor", **target.headers})
    try:
        with urllib.request.urlopen(req, timeout=target.timeout) as resp:  # http(s) only: checked when parsed
            resp.read(65536)
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"target {target.name!r} ({target.type}) answered HTTP {exc.code} {exc.reason}: "
                          "check the webhook URL and that the receiving app/channel still exists") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotifyError(f"target {target.name!r} ({target.type}) unreachable ({_scrub(reason, target)}): "
                          "check the host, DNS, proxy and firewall") from None


def _mail(target: Target, msg: dict) -> None:
    em = EmailMessage()
    em["Subject"] = title(msg)
    em["From"] = target.sender
    em["To"] = ", ".join(target.to)
    em["X-AOAI-Monitor-Alert"] = msg["id"]
    em.set_content(text(msg))
    try:
        if target.security == "ssl":
            smtp = smtplib.SMTP_SSL(target.host, target.port, timeout=target.timeout, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(target.host, target.port, timeout=target.timeout)
        with smtp:
            if target.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if target.username:
                smtp.login(target.username, reveal(target.password) or "")
            smtp.send_message(em)
    except smtplib.SMTPAuthenticationError:
        raise NotifyError(f"target {target.name!r} (email): the SMTP server refused the login of {target.username!r}; "
                          "check username and password(_env)") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyError(f"target {target.name!r} (email) via {target.host}:{target.port} failed "
                          f"({type(exc).__name__}: {_scrub(exc, target)}): check host, port and security") from None


def _scrub(exc, target: Target) -> str:
    s = str(exc)[:200]
    for secret in (target.url, target.password):
        if secret:
            s = s.replace(secret.value, "***")
    return s


def deliver(target: Target, msg: dict) -> None:
    """One attempt (blocking)."""
    if target.type == "email":
        _mail(target, msg)
    else:
        _post(target, render(target, msg))


async def send(target: Target, msg: dict, attempts: int = 4, backoff_s: float = 1.0) -> int:
    """Deliver with retries (backoff_s, 2×, 4× …); returns the attempts used, raises the last NotifyError."""
    for attempt in range(1, attempts + 1):
        try:
            await asyncio.to_thread(deliver, target, msg)
            return attempt
        except NotifyError:
            if attempt == attempts:
                raise
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    return attempts
