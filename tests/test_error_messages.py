"""Mistakes a newcomer makes first, and what they are told: at once, by name, the same in both APIs.

* a folder given as the database path;
* a read-only URI (``mode=ro``, ``immutable=1``), which used to open fine and fail at the first write;
* ``read()`` nested in as many ``read()`` blocks of one thread as the pool has readers, which used
  to wait for itself until the timeout;
* the asyncio facade raising other exception types than the synchronous pool for the same misuse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import sqlitefair


def test_a_directory_as_the_path_says_it_is_a_directory(tmp_path: Path, backend: str) -> None:
    with pytest.raises(sqlitefair.OpenError, match="is a directory, not a database file") as info:
        sqlitefair.connect(tmp_path, backend=backend)
    assert str(tmp_path / "app.db") in str(info.value)


@pytest.mark.parametrize("query", ["mode=ro", "immutable=1", "cache=shared&immutable=true", "mode=ro&cache=private"])
def test_read_only_uris_are_refused_at_connect(db_path: Path, query: str) -> None:
    sqlitefair.connect(db_path).close()  # the database exists
    with pytest.raises(sqlitefair.ConfigurationError, match=r"read-only .* would fail at the first write"):
        sqlitefair.connect(f"file:{db_path}?{query}")


@pytest.mark.parametrize("query", ["mode=rw", "mode=rwc&cache=private", "immutable=0"])
def test_writable_uris_are_still_accepted(db_path: Path, query: str) -> None:
    sqlitefair.connect(db_path).close()
    with sqlitefair.connect(f"file:{db_path}?{query}") as pool:
        with pool.transaction() as conn:
            conn.execute("create table if not exists t(v)")
