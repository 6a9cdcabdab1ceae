"""deploy/mosquitto/make_passwd.py: the broker's password file and the compose .env.

That the passwords it writes open the broker is proven by every test of test_broker_acl.py,
whose users it makes; these tests cover its refusals and its file handling.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _require
from tests.deploy.brokerproc import PASSWD_HELPER
from tests.deploy.conftest import USERS, password_variable, read_env_file


@pytest.fixture(autouse=True)
def _needs_mosquitto_passwd() -> None:
    _require(shutil.which("mosquitto_passwd") is not None, "needs mosquitto_passwd")


def _run(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(PASSWD_HELPER),
            "--passwd",
            str(tmp_path / "passwd"),
            "--env",
            str(tmp_path / "env"),
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_users_get_distinct_random_passwords_in_private_files(tmp_path: Path) -> None:
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    passwd, env = tmp_path / "passwd", tmp_path / "env"
    assert [line.split(":")[0] for line in passwd.read_text().splitlines()] == list(USERS)
    values = read_env_file(env)
    assert sorted(values) == sorted(password_variable(u) for u in USERS)
    assert len(set(values.values())) == len(USERS)
    assert all(len(v) >= 32 for v in values.values())
    assert _mode(passwd) == 0o600
    assert _mode(env) == 0o600
    for password in values.values():
        assert password not in passwd.read_text(), "the password file holds hashes only"


def test_existing_files_are_kept_without_force(tmp_path: Path) -> None:
    assert _run(tmp_path).returncode == 0
    before = (tmp_path / "passwd").read_text()
    done = _run(tmp_path)
    assert done.returncode == 2
    assert "exists (--force to overwrite)" in done.stderr
    assert (tmp_path / "passwd").read_text() == before
    assert _run(tmp_path, "--force").returncode == 0
    assert (tmp_path / "passwd").read_text() != before


@pytest.mark.parametrize("user", ["a/b", "a:b", "a+", "a#", "", "x" * 65])
def test_a_user_that_cannot_be_a_topic_segment_is_refused(tmp_path: Path, user: str) -> None:
    done = _run(tmp_path, user)
    assert done.returncode == 2
    assert "letters, digits" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_passwords_from_stdin(tmp_path: Path) -> None:
    done = _run(tmp_path, "--stdin", "ha2", "mr2", stdin="# comment\nha2:first pw\nmr2:s:e:c\n")
    assert done.returncode == 0, done.stderr
    values = read_env_file(tmp_path / "env")
    assert values == {password_variable("ha2"): "first pw", password_variable("mr2"): "s:e:c"}


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("ha2:x\n", "missing ['mr2']"),
        ("ha2:x\nmr2:y\nmr3:z\n", "extra ['mr3']"),
        ("ha2:x\nha2:y\nmr2:z\n", "given twice"),
        ("ha2\nmr2:y\n", "expected user:password"),
        ("ha2:12345\nmr2:y\n", "valid JSON"),
        ("ha2:it's\nmr2:y\n", "no single quote"),
    ],
)
def test_bad_stdin_is_refused(tmp_path: Path, stdin: str, message: str) -> None:
    done = _run(tmp_path, "--stdin", "ha2", "mr2", stdin=stdin)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "env").exists()
