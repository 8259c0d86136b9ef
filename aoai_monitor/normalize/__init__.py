"""Translation only (no I/O): payload bytes → records → flat ECS documents.

`normalize_payload` is the one entry point transports use: it never raises, and returns documents per
table plus rejects (raw text + reason) for the dead-letter table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from .common import nest
from .decode import Decoded, Reject, decode_line, decode_payload
from .metrics import MetricError, metric_document
from .records import RecordError, normalize_record

__all__ = ["Normalized", "normalize_payload", "normalize_decoded", "metric_document", "nest", "decode_payload",
           "decode_line", "normalize_record", "RecordError"]


@dataclass
class Normalized:
    logs: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # (source, reason, raw)
    records: int = 0

    def extend(self, other: "Normalized") -> None:
        self.logs += other.logs
        self.metrics += other.metrics
        self.rejects += other.rejects
        self.records += other.records


def normalize_decoded(items: Iterable[Decoded | Reject], source: str, out: Normalized | None = None) -> Normalized:
    out = out or Normalized()
    logs_append, metrics_append, rejects_append = out.logs.append, out.metrics.append, out.rejects.append
    for item in items:
        out.records += 1
        if isinstance(item, Reject):
            rejects_append((source, item.reason, item.raw))
            continue
        try:
            table, doc = normalize_record(item.record, item.raw, source, item.repairs)
        except (RecordError, MetricError) as exc:
            rejects_append((source, str(exc), item.raw))
            continue
        except Exception as exc:  # a normalizer bug must not stop the pipeline; keep the record
            rejects_append((source, f"normalizer error: {type(exc).__name__}: {exc}", item.raw))
            continue
        (logs_append if table == "logs" else metrics_append)(doc)
    return out


def normalize_payload(data: bytes | str, source: str = "") -> Normalized:
    """One payload (Event Hub message, blob, file) → documents and rejects. Never raises."""
    try:
        items = list(decode_payload(data))
    except Exception as exc:  # decoding is defensive, but bytes from the wire can surprise anyone
        raw = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        return Normalized(rejects=[(source, f"payload could not be decoded: {type(exc).__name__}: {exc}", raw)], records=1)
    return normalize_decoded(items, source)
