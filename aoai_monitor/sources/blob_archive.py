"""Storage-archive input: diagnostic settings archiving to `insights-logs-<category>/resourceId=…/y=/m=/d=/h=/m=00/PT1H.json`.

Azure appends to an hour's blob during and after that hour, so each poll reads only the bytes past the
offset remembered for the blob, up to the last complete line. The new offset is stored in the same
commit as the records it covers, so a crash can only re-read (and deterministic ids skip the replay).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime, timezone

from ..config import reveal
from ..pipeline import PreparedChunk, prepare_lines
from ..store import Store
from . import InputStatus, commit_until_stored

log = logging.getLogger("aoai_monitor.sources.blob_archive")

CHUNK_BYTES = 8 << 20
# A blob unchanged this long is complete: a last line without a newline is then a whole record.
FINAL_AFTER_S = 2 * 3600
_HOUR = re.compile(r"y=(\d{4})/m=(\d{1,2})/d=(\d{1,2})/h=(\d{1,2})")


def blob_hour(name: str) -> float | None:
    """The hour bucket from the path (ingestion time, not record time), as epoch seconds."""
    m = _HOUR.search(name)
    if not m:
        return None
    y, mo, d, h = (int(g) for g in m.groups())
    try:
        return datetime(y, mo, d, h, tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def service_client(settings: dict):
    from azure.storage.blob.aio import BlobServiceClient

    if settings.get("storage_account_connection_string"):
        return BlobServiceClient.from_connection_string(reveal(settings["storage_account_connection_string"]))
    url = f"https://{settings['storage_account']}.blob.{settings['cloud']['storage']}"
    if settings.get("storage_account_key"):
        from azure.core.credentials import AzureNamedKeyCredential
        return BlobServiceClient(url, credential=AzureNamedKeyCredential(settings["storage_account"],
                                                                          reveal(settings["storage_account_key"])))
    from .eventhub import _credential
    return BlobServiceClient(url, credential=_credential(settings))


def split_lines(data: bytes, base: int, source: str) -> PreparedChunk:
    """NDJSON bytes starting at blob offset `base` → a store chunk; dead letters name the line's byte offset."""
    lines: list[str] = []
    offsets: list[int] = []
    pos = 0
    for line in data.split(b"\n"):
        if line.strip():
            lines.append(line.decode("utf-8", "replace").strip())
            offsets.append(base + pos)
        pos += len(line) + 1
    return prepare_lines(lines, source, offsets)


class BlobArchiveInput:
    """One `[[inputs.blob_archive]]`: poll, tail each blob from its stored offset, commit data + offset together."""

    kind = "blob_archive"

    def __init__(self, settings: dict, store: Store, status: InputStatus, stopping: asyncio.Event):
        self.settings = settings
        self.name = settings["name"]
        self.store = store
        self.status = status
        self.stopping = stopping

    def _key(self, container: str, blob: str) -> str:
        return f"blob:{self.name}:{container}/{blob}"

    async def run(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.poll_once()
            except Exception as exc:  # storage unreachable etc.: report, keep polling
                self.status.get(self.name, "*").error = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.warning("%s: poll failed: %s: %s (check storage_account / key / network; retrying in %.0fs)",
                            self.name, type(exc).__name__, str(exc)[:300], self.settings["poll_interval"])
            try:
                await asyncio.wait_for(self.stopping.wait(), self.settings["poll_interval"])
            except asyncio.TimeoutError:
                pass

    async def poll_once(self) -> int:
        """One pass over every archive blob; returns records read."""
        offsets = self.store.state_items(f"blob:{self.name}:")
        since = self.settings.get("since")
        cutoff = time.time() - since if since else None
        total = 0
        async with service_client(self.settings) as service:
            containers = self.settings["containers"] or [
                c.name async for c in service.list_containers(name_starts_with="insights-")]
            for container in containers:
                stats = self.status.get(self.name, container)
                client = service.get_container_client(container)
                async for blob in client.list_blobs(name_starts_with=self.settings["prefix"] or None):
                    if self.stopping.is_set():
                        return total
                    key = self._key(container, blob.name)
                    known = offsets.get(key)
                    offset = known.get("offset", 0) if isinstance(known, dict) else 0
                    if known is None and cutoff is not None:
                        hour = blob_hour(blob.name)
                        if hour is not None and hour + 3600 < cutoff:
                            continue
                    if blob.size < offset:  # replaced or truncated: start over; ids skip what is stored
                        offset = 0
                    if blob.size == offset:
                        continue
                    age = time.time() - blob.last_modified.timestamp() if blob.last_modified else 0
                    total += await self._tail(client, container, blob.name, offset, blob.size, age > FINAL_AFTER_S, stats)
                stats.error = None
        return total

    async def _tail(self, client, container: str, name: str, offset: int, size: int, final: bool, stats) -> int:
        blob = client.get_blob_client(name)
        source = f"blob:{container}/{name}"
        records = 0
        carry = b""
        while offset + len(carry) < size:
            start = offset + len(carry)
            length = min(CHUNK_BYTES, size - start)
            data = carry + await (await blob.download_blob(offset=start, length=length)).readall()
            end = start + length >= size
            cut = len(data) if (end and final) else data.rfind(b"\n") + 1
            if cut == 0:
                if end:
                    break  # an incomplete last line: wait for Azure to finish it
                carry = data
                continue
            batch = await asyncio.to_thread(split_lines, data[:cut], offset, source)
            new_offset = offset + cut
            result = await commit_until_stored(
                self.store, [stats], self.stopping, f"{self.name} {container}/{name}", [(batch, None)],
                {self._key(container, name): {"offset": new_offset, "size": size}})
            if result is None:
                return records
            stats.add(batch.records, result.dead_lettered)
            stats.checkpoint_ms = int(time.time() * 1000)
            records += batch.records
            offset, carry = new_offset, data[cut:]
        return records
