"""A real S3-compatible server for tests: moto's server mode, one process per test session.

`s3_server` (session) starts `moto_server` on a free port of 127.0.0.1, makes one bucket, and
points the AWS_* environment variables of this process (and so of every subprocess it starts) at
it with fake credentials; it kills the server and restores the environment in `finally`.
`s3_store` (per test) is a fresh `s3://bucket/<test>-<random>/` store URI on that server, so
tests share the server but never each other's runs. Registered in tests/conftest.py.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "actx-tests"
# Fake, but distinctive: tests grep every object for them (nothing secret may be stored).
ACCESS_KEY = "AKIAACTXTESTKEY00001"
SECRET_KEY = "actx-secret-never-stored-0123456789abcdef"
ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    cache: Path  # ACTX_STORE_CACHE of this session

    def filesystem(self, allow_bucket_creation: bool = False):
        from pyarrow import fs as pafs

        host = self.endpoint.split("://", 1)[1]
        return pafs.S3FileSystem(endpoint_override=host, scheme="http", region="us-east-1",
                                 allow_bucket_creation=allow_bucket_creation)  # fmt: skip

    def keys(self, uri: str) -> dict[str, bytes]:
        """Every object below a store URI, key (relative to it) -> bytes."""
        from pyarrow import fs as pafs

        filesystem, base = self.filesystem(), uri.split("://", 1)[1].rstrip("/")
        found = {}
        for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True)):
            if info.type == pafs.FileType.File:
                with filesystem.open_input_stream(info.path) as stream:
                    found[info.path[len(base) + 1 :]] = stream.read()
        return found

    def put(self, uri: str, rel: str, data: bytes) -> None:
        base = uri.split("://", 1)[1].rstrip("/")
        with self.filesystem().open_output_stream(f"{base}/{rel}") as stream:
            stream.write(data)

    def delete(self, uri: str, rel: str) -> None:
        self.filesystem().delete_file(f"{uri.split('://', 1)[1].rstrip('/')}/{rel}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(endpoint: str, process: subprocess.Popen, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return
        except OSError:
            time.sleep(0.1)  # polling a condition, with a deadline
    raise RuntimeError(f"moto_server did not answer on {endpoint} within {deadline_s} s")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    cache = tmp_path_factory.mktemp("store-cache")
    saved = {name: os.environ.get(name) for name in
             (*ENV, "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "ACTX_STORE_CACHE")}  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_until_up(endpoint, process)
        os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint, ACTX_STORE_CACHE=str(cache))
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        server = S3Server(endpoint, BUCKET, cache)
        server.filesystem(allow_bucket_creation=True).create_dir(BUCKET)
        yield server
    finally:
        process.kill()
        process.wait(timeout=30)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_store(s3_server, request) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40].strip("-")
    return f"s3://{s3_server.bucket}/{name}-{secrets.token_hex(4)}"
