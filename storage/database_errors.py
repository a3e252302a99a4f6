"""Why the database cannot be used, said so that an operator knows what to do.

The drivers' own errors (SQLAlchemy's wrappers, sqlite3's and asyncpg's exceptions, a refused socket, a
driver that is not installed) become one `DatabaseUnavailable` whose text names the database (password
hidden) and the fix. Errors not listed here are left alone: they are bugs, not operating conditions.

    with explained_database_errors(url):
        asyncio.run(work_with_the_database())
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

SQLITE_EXAMPLE = "sqlite+aiosqlite:///data/majicbot.db"
POSTGRES_EXAMPLE = "postgresql+asyncpg://USER:PASSWORD@HOST:5432/DATABASE"

SUPPORTED_DRIVERS = {("sqlite", "aiosqlite"), ("postgresql", "asyncpg")}
# Driver module -> the extra that installs it.
_DRIVER_EXTRAS = {"asyncpg": "postgres", "aiosqlite": ""}


class DatabaseUnavailable(Exception):
    """The database cannot be opened or used; the text says what is wrong and what to do."""


@contextmanager
def explained_database_errors(url: str) -> Iterator[None]:
    """Turn the known ways a database fails to open into `DatabaseUnavailable`."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as error:
        message = describe_database_error(error, url)
        if message is None:
            raise
        raise DatabaseUnavailable(message) from error


def shown_url(url: str) -> str:
    """The URL with its password masked (fit for logs and messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def describe_database_error(error: BaseException, url: str) -> str | None:
    """One or two sentences for a known failure, or None when `error` is not one."""
    where = shown_url(url)
    sqlite_path = str(sqlite_file(url) or "the in-memory database") if _is_sqlite(url) else None
    for cause in _causes(error):
        if isinstance(cause, ModuleNotFoundError) and cause.name:
            driver = cause.name.split(".")[0]
            if driver in _DRIVER_EXTRAS:
                extra = _DRIVER_EXTRAS[driver]
                install = f"pip install 'majicbot[{extra}]'" if extra else f"pip install {driver}"
                return (
                    f"the database {where} needs the {driver} driver, which is not installed: run {install}."
                )
            if not _supported(url):
                return (
                    f"storage.database_url {where!r} needs the {driver} module, which is not installed, and "
                    f"is not a database majicbot supports; write {SQLITE_EXAMPLE} or {POSTGRES_EXAMPLE}."
                )
        if isinstance(cause, NoSuchModuleError | ArgumentError):
            return (
                f"storage.database_url {where!r} is not a database URL majicbot can use ({cause}); "
                f"write {SQLITE_EXAMPLE} or {POSTGRES_EXAMPLE}."
            )
        if isinstance(cause, DBAPIError) and cause.orig is not None:
            continue  # its driver error (`orig`) comes next, without SQLAlchemy's decorations
        text = str(cause)
        if "requires an async driver" in text or "is not async" in text:
            return (
                f"storage.database_url {where!r} names a driver that is not asynchronous; "
                f"write {SQLITE_EXAMPLE} or {POSTGRES_EXAMPLE}."
            )
        if sqlite_path is not None:
            described = _describe_sqlite(cause, text, sqlite_path)
        else:
            described = _describe_server(cause, text, where)
        if described is not None:
            return described
        if "Can't locate revision" in text:
            return (
                f"the database {where} was migrated by a newer majicbot ({text}); "
                "upgrade majicbot, or point storage.database_url at a database of this version."
            )
    return None


def _describe_sqlite(cause: BaseException, text: str, path: str) -> str | None:
    lowered = text.lower()
    if "file is not a database" in lowered or "malformed" in lowered or "not a database" in lowered:
        return (
            f"{path} is damaged or is not a SQLite database ({text}). Restore it from a backup "
            "(README: Operations), or move it away and majicbot starts with an empty one."
        )
    if "database is locked" in lowered or "database is busy" in lowered:
        return (
            f"{path} is locked by another process (another majicbot, or a sqlite3 shell in a "
            "transaction). Stop that process, or raise storage.busy_timeout_ms, and try again."
        )
    if "readonly database" in lowered or "read-only" in lowered:
        return f"{path} is read-only; make it (and its directory) writable by this user."
    if "unable to open database file" in lowered:
        return (
            f"cannot open {path}: check that its directory exists and is writable, "
            "or change storage.database_url."
        )
    if isinstance(cause, OSError) and cause.errno is not None:
        where = f" {cause.filename}" if cause.filename else ""
        return (
            f"cannot create {path} ({cause.strerror}{where}); make the directory writable or "
            "change storage.database_url."
        )
    return None


def _describe_server(cause: BaseException, text: str, where: str) -> str | None:
    lowered = text.lower()
    name = type(cause).__name__
    if isinstance(cause, ConnectionRefusedError) or "connection refused" in lowered:
        return (
            f"nothing answers at {where} (connection refused). Start the database server, "
            "or correct the host and port in storage.database_url."
        )
    if name == "InvalidPasswordError" or "password authentication failed" in lowered:
        return f"the database server refused the user or password in {where}; correct storage.database_url."
    if name == "InvalidCatalogNameError" or ("database" in lowered and "does not exist" in lowered):
        return f"the database in {where} does not exist ({text}); create it (createdb) or correct the URL."
    if isinstance(cause, TimeoutError) or "timeout" in lowered:
        return f"the database server at {where} did not answer in time; check the host and the network."
    if isinstance(cause, OSError) and cause.errno is not None:
        reason = cause.strerror or text
        return f"cannot reach the database at {where} ({reason}); check the host name and the network."
    return None


def _supported(url: str) -> bool:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    return (parsed.get_backend_name(), parsed.get_driver_name()) in SUPPORTED_DRIVERS


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for other databases, in-memory ones and `file:` URIs."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return Path(database).expanduser()


def _is_sqlite(url: str) -> bool:
    try:
        return make_url(url).get_backend_name() == "sqlite"
    except ArgumentError:
        return False


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, the DBAPI error SQLAlchemy wrapped (`orig`), and its causes and contexts."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        context = None if current.__suppress_context__ else current.__context__
        pending.extend([getattr(current, "orig", None), current.__cause__, context])
