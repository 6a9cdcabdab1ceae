#!/usr/bin/env python3
"""Create mosquitto's password file for the multinet users, and a compose .env with their
passwords.

By default every user gets a fresh random password; with --stdin the passwords are read as
`user:password` lines instead (from a secrets manager, say). The password file is built with
`mosquitto_passwd -b` (one argv list per user, never a shell string) in a temporary file next
to the target and moved into place only when complete. Both files are written mode 0600 and
an existing file is never overwritten without --force.

Runs with the standard library only, so it works on a deployment host without the package:

    python3 deploy/mosquitto/make_passwd.py                 # the default users, random passwords
    python3 deploy/mosquitto/make_passwd.py ha2 mr2 --force # another set of users
    printf 'ha1:%s\\n' "$PW" | python3 deploy/mosquitto/make_passwd.py --stdin ha1

Note: `mosquitto_passwd -b` takes the password as an argument, visible to other users of this
host in the process list while it runs (milliseconds): run this where that does not matter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: The users of deploy/mosquitto/acl and deploy/compose.yaml: node ids, then roles.
DEFAULT_USERS = ("ha1", "mr1", "mobility-ha", "nsa", "soap-gateway", "operator", "console")

#: A username the ACL's `%u` patterns can use as one topic segment, and that mosquitto's
#: `user:hash` password file can hold (no colon).
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

ENV_PREFIX = "MQTT_PASSWORD_"


class UsageError(Exception):
    """A bad argument or input line; the message says which."""


def env_name(user: str) -> str:
    """The .env variable holding `user`'s password (compose.yaml refers to it)."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", user.upper())


def check_user(user: str) -> str:
    """Refuse a username that cannot be a topic segment or a password-file key."""
    if not USERNAME.match(user):
        raise UsageError(f"user {user!r}: letters, digits, '_', '.', '-' only (1-64)")
    return user


def read_pairs(lines: Sequence[str], users: Sequence[str]) -> dict[str, str]:
    """`user:password` lines (blank lines and # comments skipped) for exactly `users`."""
    found: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        user, sep, password = text.partition(":")
        if not sep or not password:
            raise UsageError(f"stdin line {number}: expected user:password")
        if user in found:
            raise UsageError(f"stdin line {number}: user {user!r} given twice")
        if read_as_json(password):
            raise UsageError(
                f"stdin line {number}: the password of {user!r} is valid JSON, which "
                "MULTINET_BROKER__PASSWORD would not pass on as a string; choose another"
            )
        found[check_user(user)] = password
    missing = [u for u in users if u not in found]
    extra = sorted(set(found) - set(users))
    if missing or extra:
        raise UsageError(
            f"stdin must give exactly the users asked for: missing {missing}, extra {extra}"
        )
    return found


def read_as_json(password: str) -> bool:
    """Whether MULTINET_BROKER__PASSWORD=<password> would reach the service as something other
    than this string: settings.apply_env parses an override as JSON when it can (a number,
    true, null, a quoted string)."""
    try:
        json.loads(password)
    except ValueError:
        return False
    return True


def generate(users: Sequence[str]) -> dict[str, str]:
    """A random URL-safe password (32 characters, 192 bits) per user."""
    passwords = {}
    for user in users:
        password = secrets.token_urlsafe(24)
        while read_as_json(password):  # all digits: practically never, but then not a string
            password = secrets.token_urlsafe(24)
        passwords[user] = password
    return passwords


def write_passwd(target: Path, passwords: dict[str, str], program: str) -> None:
    """Build the password file with mosquitto_passwd in a temporary file, then move it in."""
    tool = shutil.which(program)
    if tool is None:
        raise UsageError(
            f"{program} not found (Debian: apt-get install mosquitto-clients or mosquitto)"
        )
    fd, name = tempfile.mkstemp(prefix=".passwd-", dir=target.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        first = True
        for user, password in passwords.items():
            argv = [tool, *(["-c"] if first else []), "-b", str(temporary), user, password]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise UsageError(f"mosquitto_passwd failed for {user!r}: {done.stderr.strip()}")
            first = False
        temporary.chmod(0o600)
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)


def check_env_values(passwords: dict[str, str]) -> None:
    """Refuse what a single-quoted .env value cannot hold, before any file is written."""
    for user, password in passwords.items():
        if "'" in password or "\n" in password:
            raise UsageError(f"password of {user!r}: no single quote or newline in a .env value")


def write_env(target: Path, passwords: dict[str, str]) -> None:
    """KEY='value' lines compose reads without interpolation, mode 0600 from the start."""
    check_env_values(passwords)
    lines = ["# Broker passwords of the multinet users (deploy/mosquitto/make_passwd.py).\n"]
    for user, password in passwords.items():
        lines.append(f"{env_name(user)}='{password}'\n")
    fd, name = tempfile.mkstemp(prefix=".env-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(lines)
        Path(name).replace(target)
    finally:
        Path(name).unlink(missing_ok=True)


def parse_owner(text: str) -> tuple[int, int]:
    """UID[:GID] (numeric: the broker container's user has no name on the host)."""
    uid, _, gid = text.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise UsageError(f"--owner {text!r}: expected UID[:GID], numbers")
    return int(uid), int(gid or uid)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "users", nargs="*", default=list(DEFAULT_USERS), help=f"default: {' '.join(DEFAULT_USERS)}"
    )
    parser.add_argument(
        "--passwd", type=Path, default=HERE / "passwd", help="password file to write"
    )
    parser.add_argument(
        "--env", type=Path, default=HERE.parent / ".env", help="compose .env to write ('-': none)"
    )
    parser.add_argument("--stdin", action="store_true", help="read user:password lines from stdin")
    parser.add_argument(
        "--owner", help="chown the password file to UID[:GID] (the broker's user; needs root)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--mosquitto-passwd", default="mosquitto_passwd", help="the tool to run")
    return parser


def check_targets(users: Sequence[str], targets: Sequence[Path | None], force: bool) -> None:
    """Refuse a duplicate user or overwriting a file without --force, before any work."""
    if len(set(users)) != len(users):
        raise UsageError("a user is listed twice")
    for target in targets:
        if target is not None and target.exists() and not force:
            raise UsageError(f"{target} exists (--force to overwrite)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 2 with a message on bad input."""
    args = build_parser().parse_args(argv)
    env: Path | None = None if str(args.env) == "-" else args.env
    try:
        users = [check_user(u) for u in args.users]
        owner = parse_owner(args.owner) if args.owner else None
        check_targets(users, (args.passwd, env), args.force)
        passwords = read_pairs(sys.stdin.readlines(), users) if args.stdin else generate(users)
        if env is not None:
            check_env_values(passwords)
        write_passwd(args.passwd, passwords, args.mosquitto_passwd)
        if owner is not None:
            os.chown(args.passwd, *owner)
        if env is not None:
            write_env(env, passwords)
    except UsageError as exc:
        print(f"make_passwd: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"make_passwd: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"{args.passwd}: {len(users)} users ({', '.join(users)})")
    if env is not None:
        print(f"{env}: their passwords, for compose (keep it private; never commit it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
