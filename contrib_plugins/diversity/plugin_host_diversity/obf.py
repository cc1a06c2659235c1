"""Credential obfuscation for the ``obf`` module (VerneMQ's ``credentials_obfuscation``).

Passwords reach scripts obfuscated, as in VerneMQ, so a script that logs or stores the
argument table by mistake does not leak them; ``obf.decrypt(reg.password)`` gives the
plaintext. This is obfuscation, not protection against the script itself: the key lives in
the plugin instance (random per lifespan) and is never visible to Lua.

Format: ``MAGIC || nonce(8) || data XOR keystream`` where the keystream is BLAKE2b keyed with
the instance key over (nonce, counter). ``decrypt`` passes anything that is not in this
format through unchanged (VerneMQ does the same for plugins that do not obfuscate).
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["Obfuscator"]

_MAGIC = b"\x00obf1\x00"
_NONCE = 8
_BLOCK = 64


class Obfuscator:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _stream(self, nonce: bytes, length: int) -> bytes:
        out = bytearray()
        counter = 0
        while len(out) < length:
            out += hashlib.blake2b(
                nonce + counter.to_bytes(8, "big"), key=self._key, digest_size=_BLOCK
            ).digest()
            counter += 1
        return bytes(out[:length])

    def encrypt(self, data: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        stream = self._stream(nonce, len(data))
        return _MAGIC + nonce + _xor(data, stream)

    def decrypt(self, data: bytes) -> bytes:
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _NONCE:
            return data
        nonce = data[len(_MAGIC) : len(_MAGIC) + _NONCE]
        body = data[len(_MAGIC) + _NONCE :]
        stream = self._stream(nonce, len(body))
        return _xor(body, stream)


def _xor(data: bytes, stream: bytes) -> bytes:
    size = len(data)
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")
