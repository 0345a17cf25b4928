"""Servers that fault tests own and break: a Redis and a PostgreSQL of their own on free
loopback ports (the shared ones on 6379 and 5432 are never touched), and a tiny filesystem
that can be filled up or made read-only.

Every helper is a context manager that bounds each wait with a deadline and cleans up on the
way out, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.prom_helpers import free_port, wait_until


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class RedisServer:
    """A ``redis-server`` of the test's own; :meth:`stop` and :meth:`start` keep the port.

    ``persistent`` models a production Redis with an append-only file (fsync on every write,
    so a stop loses nothing); without it, as in ``.ci/run``, a stop loses every key.
    """

    def __init__(self, workdir: Path, *, persistent: bool) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           socket_connect_timeout=2)

    def start(self, timeout: float = 15.0) -> None:
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                       else ["--appendonly", "no"])
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--dir", str(self.workdir), "--daemonize", "no", *persistence],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            try:
                return bool(self.client().ping())
            except redis.exceptions.RedisError:
                return False
        wait_until(up, timeout=timeout, interval=0.05, what=f"redis on port {self.port}")

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file (when it has one) and exits."""
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
        return ""


@contextlib.contextmanager
def redis_server(workdir: Path, *, persistent: bool) -> Iterator[RedisServer]:
    server = RedisServer(workdir, persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        candidate = version / "bin" / name
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(f"{name} not found on PATH or under /usr/lib/postgresql/*/bin")


class PostgresServer:
    """A PostgreSQL cluster of the test's own (``initdb`` + ``pg_ctl``) in a temporary
    directory, trust authentication on 127.0.0.1 only.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres``
    user and is driven through ``runuser``.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres", group="postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60.0) -> None:
        subprocess.run([*self._as, *argv], check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def init(self) -> None:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")

    def start(self, timeout: float = 30.0) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.root} -c fsync=off")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.logfile),
                  "-o", options, "-w", "-t", str(int(timeout)), "start", timeout=timeout + 10)

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session (a database restart); ``immediate`` is a crash."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30",
                  "stop", timeout=40)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def cleanup(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.cleanup()


class TinyFilesystem:
    """A tmpfs of ``size`` bytes mounted on ``path`` (root only): :meth:`fill` leaves no free
    space, :meth:`drain` gives it back; :meth:`read_only` and :meth:`read_write` remount it.
    As root, chmod does not stop a write; a full or read-only filesystem does."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._filler = path / "filler"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs",
                        str(self.path)], check=True, timeout=10, capture_output=True)

    def unmount(self) -> None:
        result = subprocess.run(["umount", str(self.path)], timeout=10, capture_output=True)
        if result.returncode != 0:  # still open somewhere: detach it now, freed when closed
            subprocess.run(["umount", "-l", str(self.path)], timeout=10, capture_output=True)

    def fill(self) -> None:
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for size in (1 << 16, 512, 1):  # big writes, then down to the last byte
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)

    def drain(self) -> None:
        self._filler.unlink(missing_ok=True)

    def read_only(self) -> None:
        self._remount("ro")

    def read_write(self) -> None:
        self._remount("rw")

    def _remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True,
                       timeout=10, capture_output=True)


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN, as in CI)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(tempfile.mkdtemp(prefix="gw-mnt-"))
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            timeout=10, capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], timeout=10, capture_output=True)
        return ok
    finally:
        probe.rmdir()


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: int) -> Iterator[TinyFilesystem]:
    fs = TinyFilesystem(path, size)
    fs.mount()
    try:
        yield fs
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            fs.read_write()
        fs.unmount()


class FrozenFiles:
    """``chattr +i`` (root, on ext2/3/4 and others): the files refuse every write, also through
    descriptors already open, which is what a store file turned read-only under a running
    process looks like. :meth:`thaw` (and the context manager's exit) undoes it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.frozen: list[Path] = []

    def freeze(self, pattern: str) -> None:
        for path in sorted(self.directory.glob(pattern)):
            subprocess.run(["chattr", "+i", str(path)], check=True, timeout=10,
                           capture_output=True)
            self.frozen.append(path)

    def thaw(self) -> None:
        while self.frozen:
            subprocess.run(["chattr", "-i", str(self.frozen.pop())], timeout=10,
                           capture_output=True)


def can_freeze(directory: Path) -> bool:
    """Whether ``chattr +i`` works on files in ``directory`` (root, a filesystem with it)."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        return False
    probe = directory / ".gw-chattr-probe"
    probe.touch()
    try:
        ok = subprocess.run(["chattr", "+i", str(probe)], timeout=10,
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["chattr", "-i", str(probe)], timeout=10, capture_output=True)
        return ok
    finally:
        probe.unlink()


@contextlib.contextmanager
def frozen_files(directory: Path) -> Iterator[FrozenFiles]:
    frozen = FrozenFiles(directory)
    try:
        yield frozen
    finally:
        frozen.thaw()


class Stopwatch:
    """Seconds since :meth:`start`, for measured recovery times in test output."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def start(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
