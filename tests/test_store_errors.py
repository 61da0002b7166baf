"""A store this user cannot use is one clear line and exit 1, never a sqlite3 traceback
(issue 16: non-root users got `sqlite3.OperationalError: attempt to write a readonly database`)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile

import pytest

from adsched.errors import StorageError
from adsched.standalone.store import JobRequest, Store, StoreError

from test_e2e_local import SMALL
from users import adsub, unix_users


@pytest.fixture(scope="module")
def user():
    with unix_users(1, prefix="adse") as (made,):
        yield made


@pytest.fixture
def shared_state():
    """A store made by root in a directory others can reach; its WAL files stay root's (0600)."""
    base = tempfile.mkdtemp(prefix="adsched-err-")
    os.chmod(base, 0o755)
    state = os.path.join(base, "state")
    Store.init(state, SMALL)
    yield state
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("args", [["queue"], ["submit", "-D", "/tmp", "--", "true"], ["show", "1"]])
def test_a_store_the_user_may_open_but_not_use_is_one_clear_line(user, shared_state, args):
    os.chmod(os.path.join(shared_state, Store.DB_NAME), 0o666)  # the file looks usable: no daemon detour
    r = adsub(user, args[0], "--state", shared_state, *args[1:])
    lines = r.stderr.strip().splitlines()
    assert (r.exit_code, len(lines)) == (1, 1), r.stderr
    assert lines[0].startswith(f"Error: cannot use the adsched store {shared_state}/adsched.sqlite: ")
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_a_locked_store_is_named_in_one_line(tmp_path):
    store = Store.init(tmp_path, SMALL)
    other = sqlite3.connect(tmp_path / Store.DB_NAME)
    other.execute("BEGIN EXCLUSIVE")
    store.conn.execute("PRAGMA busy_timeout = 50")
    with pytest.raises(StorageError) as e:
        store.submit(JobRequest(["true"]), 1.0)
    other.rollback()
    assert str(e.value) == f"cannot use the adsched store {tmp_path}/adsched.sqlite: database is locked (nothing was written)"
    assert issubclass(StoreError, sqlite3.OperationalError)  # outside a transaction, code handling those sees them
