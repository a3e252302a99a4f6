"""storage.database_errors: which failures are explained, and that the rest pass through untouched."""

from __future__ import annotations

import pytest

from storage.database_errors import DatabaseUnavailable, describe_database_error, explained_database_errors

SQLITE = "sqlite+aiosqlite:///data/majicbot.db"
POSTGRES = "postgresql+asyncpg://majicbot:s3cret@db.example:5432/majicbot"


def test_a_missing_driver_names_its_extra() -> None:
    error = ModuleNotFoundError("No module named 'asyncpg'", name="asyncpg")
    message = describe_database_error(error, POSTGRES)
    assert message is not None and "pip install 'majicbot[postgres]'" in message
    assert "s3cret" not in message and "***" in message


def test_an_unrelated_missing_module_is_not_a_database_problem() -> None:
    error = ModuleNotFoundError("No module named 'prometheus_client'", name="prometheus_client")
    assert describe_database_error(error, SQLITE) is None


def test_a_suppressed_context_is_not_followed() -> None:
    def fail() -> None:
        try:
            raise ModuleNotFoundError("No module named 'asyncpg'", name="asyncpg")
        except ModuleNotFoundError:
            raise RuntimeError("something else entirely") from None

    with pytest.raises(RuntimeError) as caught:
        fail()
    assert describe_database_error(caught.value, POSTGRES) is None


def test_refused_connection_hides_the_password() -> None:
    message = describe_database_error(ConnectionRefusedError(111, "Connection refused"), POSTGRES)
    assert message is not None and "connection refused" in message and "s3cret" not in message


def test_unknown_errors_pass_through_unchanged() -> None:
    with pytest.raises(KeyError), explained_database_errors(SQLITE):
        raise KeyError("a bug, not an operating condition")
    with pytest.raises(DatabaseUnavailable, match="is locked"), explained_database_errors(SQLITE):
        raise RuntimeError("(sqlite3.OperationalError) database is locked")
