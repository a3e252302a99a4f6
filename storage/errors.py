"""Database failures the rest of the program can act on, mapped from the drivers' errors.

    StorageError            the database could not do what was asked (the text says why)
     ├── StorageFull        no space left for the database (SQLite's "database or disk is full",
     │                      PostgreSQL's disk_full): waiting or retrying cannot help until space is freed
     └── StorageBusy        another writer held the database longer than the busy timeout

Other driver errors pass through unchanged: they are bugs or outages, not conditions with a name.
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError


class StorageError(Exception):
    """The database could not do what was asked."""


class StorageFull(StorageError):
    """The disk (or the database's size limit) is full: free space, then it works again."""


class StorageBusy(StorageError):
    """Another writer held the database lock past the busy timeout."""


_FULL_SQLSTATES = frozenset({"53100"})  # PostgreSQL disk_full
_FULL_PHRASES = ("database or disk is full", "no space left on device", "could not extend file")


def storage_error(error: OperationalError) -> StorageError | None:
    """The named condition behind a driver error, or None if it is not one we name."""
    text = str(error.orig if error.orig is not None else error).lower()
    sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if sqlstate in _FULL_SQLSTATES or any(phrase in text for phrase in _FULL_PHRASES):
        return StorageFull(f"The database has no space left ({error.orig}); free disk space.")
    if "database is locked" in text or "database table is locked" in text:
        return StorageBusy(f"The database stayed locked past the busy timeout ({error.orig}).")
    return None
