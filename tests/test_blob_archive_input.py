"""Storage-archive input against Azurite: tail growing PT1H.json blobs, offsets in the store, --since backfill."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from aoai_monitor.config import blob_archive_settings
from aoai_monitor.sources import InputStatus
from aoai_monitor.sources.blob_archive import BlobArchiveInput
from aoai_monitor.store import Store
from tests.test_eventhub_input import _RECORD

RID = "resourceId=/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/AOAI"


def lines(key: str, n: int) -> bytes:
    out = b""
    for j in range(n):
        r = dict(_RECORD)
        r["correlationId"] = f"{key}-{j}"
        out += orjson.dumps(r) + b"\n"
    return out


def blob_path(when: datetime) -> str:
    return f"{RID}/y={when:%Y}/m={when:%m}/d={when:%d}/h={when:%H}/m=00/PT1H.json"


@pytest.fixture
def archive(azurite):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    name = f"insights-logs-requestresponse-{azurite.create_container()[5:13]}"
    service.create_container(name)
    yield service.get_container_client(name)
    service.delete_container(name)


def make_input(azurite, store, container: str, **extra) -> BlobArchiveInput:
    settings = blob_archive_settings({"name": "archive", "storage_account_connection_string": azurite.connection_string,
                                      "containers": [container], **extra}, "inputs.blob_archive[0]")
    return BlobArchiveInput(settings, store, InputStatus(), asyncio.Event())


async def test_tails_appended_bytes_and_keeps_offsets_in_the_store(tmp_path, azurite, archive):
    now = datetime.now(timezone.utc)
    blob = archive.get_blob_client(blob_path(now))
    blob.create_append_blob()
    blob.append_block(lines("a", 30))
    partial = lines("b", 5)
    blob.append_block(partial[:-40])  # Azure is still writing the 5th line
    with Store(tmp_path / "s.duckdb") as store:
        inp = make_input(azurite, store, archive.container_name)
        assert await inp.poll_once() == 34
        assert await inp.poll_once() == 0  # nothing new: nothing read
        blob.append_block(partial[-40:] + b"not json\n" + lines("c", 10))
        assert await inp.poll_once() == 12
        assert store.count("logs") == 45
        dead = store.cursor().execute("SELECT source, reason FROM dead_letters").fetchall()
        assert len(dead) == 1 and dead[0][0].startswith(f"blob:{archive.container_name}/{blob.blob_name}:")
        offset = int(dead[0][0].rsplit(":", 1)[1])
        assert blob.download_blob(offset=offset, length=8).readall() == b"not json"
        key = f"blob:archive:{archive.container_name}/{blob.blob_name}"
        size = blob.get_blob_properties().size
        assert store.get_state(key)["offset"] == size

    # A new process (fresh input, same store) starts from the stored offsets: nothing read twice.
    with Store(tmp_path / "s.duckdb") as store:
        blob.append_block(lines("d", 3))
        assert await make_input(azurite, store, archive.container_name).poll_once() == 3
        assert store.count("logs") == 48


async def test_since_skips_old_hours_unless_already_tracked(tmp_path, azurite, archive):
    old = datetime.now(timezone.utc) - timedelta(days=3)
    recent = datetime.now(timezone.utc) - timedelta(hours=1)
    for when, key in ((old, "old"), (recent, "new")):
        b = archive.get_blob_client(blob_path(when))
        b.create_append_blob()
        b.append_block(lines(key, 4))
    with Store(tmp_path / "s.duckdb") as store:
        assert await make_input(azurite, store, archive.container_name, since="1d").poll_once() == 4
        # A wider backfill picks up the old hour; the recent one adds nothing new.
        assert await make_input(azurite, store, archive.container_name, since="7d").poll_once() == 4
        assert store.count("logs") == 8


async def test_replaced_blob_is_reread_without_duplicates(tmp_path, azurite, archive):
    b = archive.get_blob_client(blob_path(datetime.now(timezone.utc)))
    b.upload_blob(lines("r", 6), overwrite=True)
    with Store(tmp_path / "s.duckdb") as store:
        inp = make_input(azurite, store, archive.container_name)
        assert await inp.poll_once() == 6
        b.upload_blob(lines("r", 3), overwrite=True)  # shorter than the stored offset: read again from 0
        assert await inp.poll_once() == 3
        assert store.count("logs") == 6
