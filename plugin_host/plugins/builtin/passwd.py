"""Built-in ``passwd`` plugin: user names and password hashes from a file (VerneMQ vmq_passwd).

Configuration (``vmq_passwd.*`` is an alias)::

    passwd.password_file = /etc/plugin-host/passwd
    passwd.password_reload_interval = 10      # seconds; 0 = never reload

The file has one ``user:hash`` line per user (``#`` comments and blank lines allowed). Hashes:
bcrypt (``$2b$``, ``$2a$``, ``$2y$``; what ``plugin-host passwd add`` writes), and for
existing files VerneMQ's / mosquitto 1.x ``$6$salt$hash`` (salted SHA-512) and mosquitto 2's
``$7$iterations$salt$hash`` (PBKDF2-SHA512).

Answers ``auth_on_register`` and ``auth_on_register_m5``:

* no user name, no password, or a user not in the file: next (VerneMQ's behaviour, so another
  plugin can decide);
* right password: ok; wrong password: ``Deny(invalid_credentials=True)`` (MQTT 3 CONNACK 4,
  MQTT 5 0x86).

Without ``password_file`` the plugin answers no hook at all. The file is re-read when it
changes (polled every ``password_reload_interval``); a broken file on reload is logged and the
previous users stay in force, while a missing or broken file at start-up stops start-up.
Hash checks run in worker threads (bcrypt is slow on purpose), at most one per CPU at a time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Any

import bcrypt
import trio

from plugin_host.hooks.markers import hookimpl
from plugin_host.hooks.results import Deny
from plugin_host.plugins.builtin.watch import FileFormatError, FilePlugin

__all__ = ["PasswdPlugin", "hash_password", "parse_password_file", "verify_password"]

HOOKS = frozenset({"auth_on_register", "auth_on_register_m5"})
BCRYPT_MAX_PASSWORD = 72
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


def _b64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def check_hash_format(hashed: str) -> str | None:
    """None when ``hashed`` is a supported hash, else the reason it is not."""
    if hashed.startswith("$2"):
        return None if _BCRYPT.fullmatch(hashed) else "malformed bcrypt hash"
    parts = hashed.split("$")
    try:
        if len(parts) == 4 and parts[:2] == ["", "6"]:
            _b64(parts[2])
            _b64(parts[3])
            return None
        if len(parts) == 5 and parts[:2] == ["", "7"]:
            if not parts[2].isdigit() or int(parts[2]) < 1:
                return "malformed $7$ hash (iterations)"
            _b64(parts[3])
            _b64(parts[4])
            return None
    except (binascii.Error, ValueError):
        return "malformed hash (bad base64)"
    return "unsupported hash (expected bcrypt $2b$, $6$ or $7$)"


def verify_password(password: bytes, hashed: str) -> bool:
    """Check ``password`` against one stored hash (blocking: run it in a thread)."""
    if hashed.startswith("$2"):
        # bcrypt only ever used the first 72 bytes; bcrypt>=5 refuses longer input instead.
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed.encode("ascii"))
    parts = hashed.split("$")
    if parts[1] == "6":
        digest = hashlib.sha512(password + _b64(parts[2])).digest()
        return hmac.compare_digest(base64.b64encode(digest), parts[3].encode("ascii"))
    iterations, salt, expected = int(parts[2]), _b64(parts[3]), _b64(parts[4])
    digest = hashlib.pbkdf2_hmac("sha512", password, salt, iterations, len(expected))
    return hmac.compare_digest(digest, expected)


def hash_password(password: bytes, rounds: int = 12) -> str:
    """A bcrypt hash for a password file line. Raises ValueError above 72 bytes."""
    if len(password) > BCRYPT_MAX_PASSWORD:
        raise ValueError(f"bcrypt uses at most {BCRYPT_MAX_PASSWORD} bytes of a password")
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds)).decode("ascii")


def parse_password_file(text: str, path: Path) -> dict[str, str]:
    """``{user: hash}`` from the file's text; raises :class:`FileFormatError` for a bad line."""
    users: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise FileFormatError(path, lineno, "expected user:hash")
        hashed = hashed.strip()
        problem = check_hash_format(hashed)
        if problem:
            raise FileFormatError(path, lineno, f"user {user!r}: {problem}")
        users[user] = hashed
    return users


class PasswdPlugin(FilePlugin[dict[str, str]]):
    """One instance per broker (the module's ``plugin_host_plugin``)."""

    name = "passwd"
    file_key = "password_file"
    file_doc = "user:hash lines; unset = plugin inactive"
    interval_key = "password_reload_interval"
    hooks = HOOKS

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, str] = {}
        # bcrypt checks run in worker threads, at most one per CPU at a time.
        self._limiter = trio.CapacityLimiter(max(1, os.cpu_count() or 1))

    def parse(self, text: str, path: Path) -> dict[str, str]:
        return parse_password_file(text, path)

    def loaded(self, value: dict[str, str]) -> dict[str, Any]:
        self.users = value
        return {"users": len(value)}

    # -- hooks ---------------------------------------------------------------------------------

    async def _check(self, username: str | None, password: bytes | None) -> bool | Deny | None:
        if username is None or password is None:
            return None
        hashed = self.users.get(username)
        if hashed is None:
            return None
        if hashed.startswith("$6$"):
            ok = verify_password(password, hashed)  # one SHA-512: cheap enough inline
        else:
            ok = await trio.to_thread.run_sync(
                verify_password, password, hashed, limiter=self._limiter
            )
        if ok:
            return True
        return Deny("invalid_credentials", 0x86, invalid_credentials=True)

    @hookimpl
    async def auth_on_register(
        self, username: str | None, password: bytes | None
    ) -> bool | Deny | None:
        return await self._check(username, password)

    @hookimpl
    async def auth_on_register_m5(
        self, username: str | None, password: bytes | None
    ) -> bool | Deny | None:
        return await self._check(username, password)


#: The manager registers ``plugin_host_plugin()`` (a fresh instance) instead of this module.
plugin_host_plugin = PasswdPlugin
