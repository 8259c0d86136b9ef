"""pytest fixtures for the Azure stand-ins.

Imported by tests/conftest.py with ``from tests.standins.fixtures import *``.

* ``azurite`` (session): a running Azurite blob server; attributes
  ``connection_string``, ``blob_endpoint``, ``host``, ``port`` and
  ``create_container(name=None) -> str``.
* ``eventhub_standin`` (function): a fresh 4-partition Event Hubs stand-in
  (event hub ``aoai-logs``) with the pyamqp padding shim installed in this
  process; see :class:`tests.standins.eventhubs.EventHubStandin`.
* ``checkpoint_container`` (function): a fresh, empty container on
  ``azurite`` for a BlobCheckpointStore.
* ``standin_subprocess_env`` (function): environment for a child process
  (e.g. ``aoai-monitor run``) that must load the padding shim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterator

import pytest

from tests.standins import amqp_shim
from tests.standins.azurite import Azurite

if TYPE_CHECKING:  # imported lazily below: conftest loads this module for every test,
    # and tests that never touch Event Hubs should not need proton or the SDK.
    from tests.standins.eventhubs import EventHubStandin

__all__ = ["azurite", "eventhub_standin", "checkpoint_container", "standin_subprocess_env"]


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = Azurite().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def eventhub_standin() -> Iterator["EventHubStandin"]:
    from tests.standins.eventhubs import EventHubStandin

    amqp_shim.install()
    hub = EventHubStandin(eventhub="aoai-logs", partitions=4).start()
    try:
        yield hub
    finally:
        hub.stop()
    # A handler error inside the reactor would otherwise only show up as a hang.
    assert not hub.errors, f"event hubs stand-in errors: {hub.errors!r}"


@pytest.fixture
def checkpoint_container(azurite: Azurite) -> str:
    return azurite.create_container()


@pytest.fixture
def standin_subprocess_env() -> Dict[str, str]:
    return amqp_shim.subprocess_env()
