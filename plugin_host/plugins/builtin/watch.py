"""Load a small text file and reload it when it changes (the passwd and acl plugins).

The file is polled (``stat`` every ``interval`` seconds, like VerneMQ's
``password_reload_interval`` / ``acl_reload_interval``); a change of modification time, size,
inode or ctime triggers a reload. A file that fails to parse on reload is reported and the
previous content stays in force. File access runs in a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import trio

from plugin_host.hooks.markers import hookimpl
from plugin_host.settings import Key, PluginSection

T = TypeVar("T")

_Signature = tuple[int, int, int, int]


class FileFormatError(ValueError):
    """A line of a plugin's file is wrong: ``str()`` is ``file:line: reason``."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}")


def _signature(path: Path) -> _Signature:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


class WatchedFile(Generic[T]):
    """``path`` parsed by ``parse(text, path)``; :meth:`watch` keeps :attr:`value` current.

    ``generation`` counts load attempts after the first (successful or not), and
    :meth:`wait_generation` lets tests and tools wait for the next one without sleeping.
    """

    def __init__(
        self,
        path: Path,
        parse: Callable[[str, Path], T],
        on_load: Callable[[T], None],
        log: Any,
        *,
        what: str,
    ) -> None:
        self.path = path
        self._parse = parse
        self._on_load = on_load
        self._log = log
        self._what = what
        self._signature: _Signature | None = None
        self.generation = 0
        self.last_error: str | None = None
        self._changed = trio.Event()

    def _read(self) -> tuple[_Signature, T]:
        signature = _signature(self.path)
        text = self.path.read_text(encoding="utf-8")
        return signature, self._parse(text, self.path)

    async def load(self) -> None:
        """Load the file now; raises ``OSError`` / :class:`FileFormatError` / ``ValueError``."""
        signature, value = await trio.to_thread.run_sync(self._read)
        self._signature = signature
        self._on_load(value)

    async def load_setting(self, config: PluginSection, key: str) -> None:
        """:meth:`load` at start-up: a file that cannot be read or parsed is a config error of
        the plugin's ``key`` (the setting that names the file)."""
        try:
            await self.load()
        except FileFormatError as exc:
            raise config.error(key, str(exc)) from None
        except OSError as exc:
            raise config.error(key, f"cannot read {self.path}: {exc.strerror}") from None

    @asynccontextmanager
    async def watching(self, interval: float) -> AsyncIterator[None]:
        """Keep the content current while the block runs: poll every ``interval`` seconds
        (0 or less: never) in a nursery of its own, cancelled when the block ends."""
        async with trio.open_nursery() as nursery:
            if interval > 0:
                nursery.start_soon(self.watch, interval)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()

    async def _reload_if_changed(self) -> None:
        try:
            signature = await trio.to_thread.run_sync(_signature, self.path)
        except OSError as exc:
            if self.last_error != str(exc):
                self._log.error(f"{self._what}_unreadable", path=str(self.path), error=str(exc))
                self.last_error = str(exc)
                self._bump()
            return
        if signature == self._signature:
            return
        try:
            await self.load()
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            # Keep the previous content: a half-written file must not lock everybody out.
            self._signature = signature
            self.last_error = str(exc)
            self._log.error(f"{self._what}_reload_failed", path=str(self.path), error=str(exc))
        else:
            self.last_error = None
            self._log.info(f"{self._what}_reloaded", path=str(self.path))
        self._bump()

    def _bump(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_generation(self, generation: int) -> None:
        """Return once :attr:`generation` reached ``generation``."""
        while self.generation < generation:
            await self._changed.wait()

    async def watch(self, interval: float) -> None:
        """Poll forever (run it in the plugin's nursery)."""
        while True:
            await trio.sleep(interval)
            await self._reload_if_changed()


class FilePlugin(Generic[T]):
    """Base of a built-in plugin that works from one file, active only while it is loaded.

    A subclass names its settings and hooks in class attributes and implements
    :meth:`parse` and :meth:`loaded`; this class supplies the config schema, the active
    hooks and the lifespan: load the file named by :attr:`file_key` at start (a file that
    cannot be read or parsed is a config error of that key), log ``<name>_loaded``, poll it
    every :attr:`interval_key` seconds while the broker runs, and tell the host when the
    plugin becomes active or inactive. Without the setting the plugin stays inactive and
    logs ``<name>_inactive``.
    """

    #: Plugin name, for log events and messages (``passwd``, ``acl``).
    name: str
    #: The setting naming the file, and its documentation line.
    file_key: str
    file_doc: str
    #: The setting with the poll interval in seconds (0 = never reload).
    interval_key: str
    #: The hooks the plugin answers while its file is loaded.
    hooks: frozenset[str]

    def __init__(self) -> None:
        self.file: WatchedFile[T] | None = None

    def parse(self, text: str, path: Path) -> T:
        """The file's content; raises :class:`FileFormatError` for a bad line."""
        raise NotImplementedError

    def loaded(self, value: T) -> dict[str, Any]:
        """Take a freshly (re)loaded content into use; returns fields for the log line."""
        raise NotImplementedError

    @hookimpl
    def plugin_host_config_schema(self) -> list[Key]:
        return [
            Key(self.file_key, "path", doc=self.file_doc),
            Key(
                self.interval_key,
                "duration_s",
                default=10,
                doc="seconds between checks of the file for changes; 0 = never reload",
            ),
        ]

    @hookimpl
    def plugin_host_active_hooks(self) -> frozenset[str]:
        return self.hooks if self.file is not None else frozenset()

    @hookimpl
    def plugin_host_lifespan(
        self, host: Any, config: PluginSection
    ) -> AbstractAsyncContextManager[None]:
        return self._lifespan(host, config)

    @asynccontextmanager
    async def _lifespan(self, host: Any, config: PluginSection) -> AsyncIterator[None]:
        path = config.get(self.file_key)
        if path is None:
            host.log.info(f"{self.name}_inactive", reason=f"{self.name}.{self.file_key} is not set")
            yield
            return
        fields: dict[str, Any] = {}

        def on_load(value: T) -> None:
            fields.update(self.loaded(value))

        watched = WatchedFile(Path(path), self.parse, on_load, host.log, what=self.file_key)
        await watched.load_setting(config, self.file_key)
        self.file = watched
        host.hooks_changed()
        host.log.info(f"{self.name}_loaded", path=str(path), **fields)
        try:
            async with watched.watching(float(config.get(self.interval_key, 10) or 0)):
                yield
        finally:
            self.file = None
            host.hooks_changed()
