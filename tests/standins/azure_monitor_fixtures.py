"""pytest fixtures for the Azure Monitor / ARM / Entra stand-in (tests/standins/azure_monitor.py).

Use in a test module::

    from tests.standins.azure_monitor_fixtures import azure_monitor_server  # noqa: F401

    def test_x(azure_monitor_server):
        server = azure_monitor_server
        ...

``azure_monitor_server`` is function-scoped: a fresh server (default ``SyntheticModel``, empty request
log, no faults) per test.  Constructor options can be passed with indirect parametrisation::

    @pytest.mark.parametrize("azure_monitor_server", [{"arm_page_size": 2}], indirect=True)

(a ``"model"`` key is passed as the model).  ``azure_monitor_server_factory`` builds extra servers
(e.g. with a custom model) that are stopped at the end of the test.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from tests.standins.azure_monitor import AzureMonitorStandin, SyntheticModel

__all__ = ["azure_monitor_server", "azure_monitor_server_factory"]


@pytest.fixture
def azure_monitor_server(request: pytest.FixtureRequest) -> Iterator[AzureMonitorStandin]:
    options: dict[str, Any] = dict(getattr(request, "param", None) or {})
    model = options.pop("model", None)
    server = AzureMonitorStandin(model, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def azure_monitor_server_factory() -> Iterator[Callable[..., AzureMonitorStandin]]:
    servers: list[AzureMonitorStandin] = []

    def make(model: SyntheticModel | None = None, **options: Any) -> AzureMonitorStandin:
        server = AzureMonitorStandin(model, **options).start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
