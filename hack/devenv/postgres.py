"""A private PostgreSQL cluster: initdb in a directory, a free port, no root service."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devenv import reaper
from devenv.ports import free_port, port_open, wait_for
from devenv.procs import dies_with_parent, spawn, stop

PG_BIN_CANDIDATES = ["/usr/lib/postgresql/15/bin", "/usr/local/bin"]


def pg_bin(name: str) -> str:
    for d in [os.environ.get("PG_BIN", ""), *PG_BIN_CANDIDATES]:
        if d and Path(d, name).exists():
            return str(Path(d, name))
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"PostgreSQL binary {name!r} not found (set PG_BIN)")
    return found


def _as_user() -> tuple[dict[str, object], str]:
    """PostgreSQL refuses to run as root: drop to 'postgres' (or nobody) when root."""
    if os.geteuid() != 0:
        return {}, pwd.getpwuid(os.geteuid()).pw_name
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": pw.pw_uid, "group": pw.pw_gid}, name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL")


@dataclass
class PostgresServer:
    """One PostgreSQL 15 cluster in a temporary directory."""

    base: Path = field(default_factory=lambda: reaper.temp_dir("emailplan-pg-"))
    port: int = field(default_factory=free_port)
    user: str = "emailplan"
    database: str = "emailplan"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy asyncpg URL (trust auth on loopback, no password)."""
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> PostgresServer:
        ids, _ = _as_user()
        data = self.base / "data"
        if ids:
            os.chmod(self.base, 0o777)
        if not (data / "PG_VERSION").exists():
            subprocess.run(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.user,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                **ids,  # type: ignore[arg-type]
            )
        self._launch(ids)
        subprocess.run(
            [pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database],
            capture_output=True,
        )
        return self

    def _launch(self, ids: dict[str, object]) -> None:
        data = self.base / "data"
        argv = [
            pg_bin("postgres"),
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.base),
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]
        if ids:
            # Changing user clears the parent-death signal: setpriv sets it again after the change.
            die = ["--pdeathsig=SIGKILL"] if dies_with_parent() else []
            argv = [
                "setpriv",
                f"--reuid={ids['user']}",
                f"--regid={ids['group']}",
                "--clear-groups",
                *die,
                *argv,
            ]
        self.proc = spawn(argv, self.base / "postgres.log")
        wait_for(self._ready, 30, f"PostgreSQL on port {self.port}")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {(self.base / 'postgres.log').read_text()[-2000:]}")
        if not port_open(self.port):
            return False
        r = subprocess.run(
            [pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
        )
        return r.returncode == 0

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server (fast shutdown: connections are cut) and start it again."""
        import time

        self._shutdown()
        time.sleep(down_seconds)
        ids, _ = _as_user()
        self._launch(ids)

    def stop(self) -> None:
        self._shutdown()
        self.proc = None

    def _shutdown(self) -> None:
        """Fast shutdown: SIGINT to the postmaster cuts every session and writes a checkpoint.

        Not SIGTERM to the process group: that is PostgreSQL's *smart* shutdown, which
        keeps serving connected clients (a pool never lets go), so the server kept
        committing until the timeout killed it, and with ``synchronous_commit=off`` the
        crash then lost commits that clients had been told were durable.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            stop(self.proc, timeout=5)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
