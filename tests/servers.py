"""Throwaway PostgreSQL, S3 (moto) and Redis servers for the tests, one of each per session.

A deployment of divsweep keeps its registry in PostgreSQL, its results in S3 and, for Ray's GCS
fault tolerance, the head's state in Redis (docs/DEPLOY.md). The tests run against real
servers, started here from the binaries `.ci/run` installs (Debian's ``postgresql`` and
``redis-server``; moto's S3 server comes from PyPI with the ``test`` extra), each in a temporary
directory on a free loopback port, stopped at the end of the session::

    with postgres_server() as pg:          # initdb + pg_ctl, trust auth on 127.0.0.1
        url = pg.new_database()             # 'postgresql+psycopg://divsweep@127.0.0.1:5433/t1'
    with s3_server(tmp) as s3:              # python -m moto.server
        uri = s3.new_bucket()               # 's3://b1/store?endpoint_override=...&scheme=http'
    with redis_server(tmp) as redis:        # redis-server, no persistence
        redis.address                       # '127.0.0.1:6380'

A missing binary is a skip with the reason on a developer's machine and an error in CI
(``CI=true``), where `.ci/run` must have installed it.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.local_ray import free_port

#: Debian keeps PostgreSQL's server binaries off the PATH, under a versioned directory.
_PG_DIRS = "/usr/lib/postgresql/*/bin"
#: Credentials moto accepts (any); the store's S3 filesystem reads them from the environment.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "divsweep-test",
    "AWS_SECRET_ACCESS_KEY": "divsweep-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def missing(what: str, install: str) -> None:
    """Skip (a developer's machine) or fail (CI) a test whose server binary is absent."""
    msg = f"{what} is not installed ({install}; `.ci/run` installs it)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _wait(ready: Callable[[], bool], proc_alive: Callable[[], bool], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready():
            return
        if not proc_alive():
            break
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------------------------------------
# PostgreSQL
# ------------------------------------------------------------------------------------------------
def pg_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: on the PATH, else Debian's own."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    dirs = sorted(glob.glob(_PG_DIRS), key=lambda d: int(Path(d).parent.name), reverse=True)
    return Path(dirs[0]) if dirs else None


@dataclass
class Postgres:
    """A running server; `new_database` gives each test its own empty database."""

    port: int
    bindir: Path
    user: str = "divsweep"
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True
        ) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True
        )
        return out.stdout.strip()


def _as_server_user() -> tuple[list[str], int, int]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's ``postgres`` user."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pw = pwd.getpwnam("nobody")
    return ["runuser", "-u", pw.pw_name, "--"], pw.pw_uid, pw.pw_gid


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    bindir = pg_bindir()
    if bindir is None:
        missing("PostgreSQL", "apt-get install postgresql")
        raise AssertionError("unreachable")
    prefix, uid, gid = _as_server_user()
    # Its own directory under /tmp: pytest's are private to root, so `postgres` could not
    # reach a data directory inside them.
    root = Path(tempfile.mkdtemp(prefix="divsweep-pg-"))
    os.chown(root, uid, gid)
    data, log = root / "data", root / "server.log"
    port = free_port()
    pg = Postgres(port, bindir)
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", pg.user, "-A", "trust"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts]
    subprocess.run([*start, "-w", "start"], check=True, capture_output=True)
    try:
        yield pg
    finally:
        stop = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# S3 (moto's server mode)
# ------------------------------------------------------------------------------------------------
@dataclass
class S3:
    """A running S3-compatible server; `new_bucket` gives each test its own bucket."""

    port: int
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uri(self, bucket: str, prefix: str = "store") -> str:
        """The store URI: pyarrow's S3 options travel in its query (`sweeps.store.join_uri`)."""
        return f"s3://{bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http"

    def new_bucket(self, prefix: str = "store") -> str:
        import pyarrow.fs as pafs

        bucket = f"divsweep-{os.getpid()}-{next(self._names)}"
        fs = pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            scheme="http",
            access_key=S3_ENV["AWS_ACCESS_KEY_ID"],
            secret_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region=S3_ENV["AWS_DEFAULT_REGION"],
            allow_bucket_creation=True,
        )
        fs.create_dir(bucket)
        return self.uri(bucket, prefix)

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return f"moto {version('moto')} (server mode)"


@contextlib.contextmanager
def s3_server(tmp: Path) -> Iterator[S3]:
    try:
        import moto.server  # noqa: F401 - only whether it is installed
    except ImportError:
        missing("moto's S3 server", "pip install 'moto[server]'")
    port = free_port()
    log = tmp / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: _port_open(port), lambda: proc.poll() is None, "moto", log)
        for k, v in S3_ENV.items():
            os.environ.setdefault(k, v)
        yield S3(port)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ------------------------------------------------------------------------------------------------
# Redis
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Redis:
    port: int
    binary: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        return out.stdout.strip()


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[Redis]:
    binary = shutil.which("redis-server")
    if binary is None:
        missing("Redis", "apt-get install redis-server")
        raise AssertionError("unreachable")
    port = free_port()
    root = tmp / "redis"
    root.mkdir(parents=True)
    log = root / "redis.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(root),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: _redis_pong(port), lambda: proc.poll() is None, "redis-server", log)
        yield Redis(port, binary)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
