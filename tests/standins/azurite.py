"""Start and stop Azurite (Blob service only) for tests.

Azurite comes from npm (``npm install`` at the repository root installs the
version pinned in package.json); it is started on 127.0.0.1 with a free port
and a throw-away data directory.

``--skipApiVersionCheck`` is needed because azure-storage-blob sends an API
version newer than Azurite knows; the checkpoint store's vendored blob client
(API 2019-07-07) would work without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import List, Optional

# The well-known development storage account (public, documented by Microsoft).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AZURITE_BLOB = os.path.join(REPO_ROOT, "node_modules", ".bin", "azurite-blob")


class AzuriteNotInstalled(RuntimeError):
    pass


def _free_port(host: str) -> int:
    # Azurite cannot report an ephemeral port back, so pick one for it; the
    # tiny race with other processes is acceptable on a test machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def connection_string_for(host: str, port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://{host}:{port}/{ACCOUNT_NAME};")


class Azurite:
    """A running Azurite blob server; use ``start()``/``stop()`` or ``with``."""

    def __init__(self, host: str = "127.0.0.1", port: Optional[int] = None, location: Optional[str] = None,
                 executable: str = AZURITE_BLOB, start_timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.executable = executable
        self.start_timeout = start_timeout
        self._own_location = location is None
        self.location = location
        self.process: Optional[subprocess.Popen] = None
        self._log_path: Optional[str] = None
        self._created_containers: List[str] = []

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return connection_string_for(self.host, self.port)

    def start(self) -> "Azurite":
        if not os.path.exists(self.executable):
            raise AzuriteNotInstalled(
                f"{self.executable} not found: run `npm install` in {REPO_ROOT} (package.json pins azurite)")
        if self.location is None:
            self.location = tempfile.mkdtemp(prefix="azurite-")
        if self.port is None:
            self.port = _free_port(self.host)
        self._log_path = os.path.join(self.location, "azurite-stdout.log")
        log = open(self._log_path, "wb")
        self.process = subprocess.Popen(
            [self.executable, "--blobHost", self.host, "--blobPort", str(self.port),
             "--location", self.location, "--silent", "--disableTelemetry", "--skipApiVersionCheck"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Own process group: stop() must also end node's children, if any.
            start_new_session=True,
        )
        log.close()
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"azurite exited with {self.process.returncode}: {self._log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"azurite did not listen on {self.host}:{self.port} within {self.start_timeout}s")

    def _log_tail(self) -> str:
        try:
            with open(self._log_path or "", "rb") as fh:
                return fh.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(5)
        self.process = None
        if self._own_location and self.location:
            shutil.rmtree(self.location, ignore_errors=True)
            self.location = None

    def __enter__(self) -> "Azurite":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def create_container(self, name: Optional[str] = None) -> str:
        """Create a blob container (a fresh unique name by default) and return its name."""
        from azure.storage.blob import BlobServiceClient

        name = name or f"test-{uuid.uuid4().hex[:16]}"
        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.create_container(name)
        self._created_containers.append(name)
        return name
