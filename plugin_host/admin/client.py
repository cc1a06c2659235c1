"""The HTTP client of ``plugin-host admin``: one request to the admin API, decoded.

Built on :class:`plugin_host.http.HTTPPool` (the project's one HTTP client interface), so TLS
options and error messages are the same as everywhere else::

    async with AdminClient("http://127.0.0.1:8888", api_key="...") as client:
        sessions = await client.call("GET", "/api/v1/sessions", query={"online": "true"})
"""

from __future__ import annotations

import json
import ssl
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

from plugin_host.http import HTTPPool, HTTPRequestError, TLSOptions

__all__ = ["DEFAULT_URL", "AdminClient", "AdminClientError", "segment"]

DEFAULT_URL = "http://127.0.0.1:8888"


class AdminClientError(Exception):
    """The request failed: the broker could not be reached (``status`` None) or answered an
    error (``status``, ``code`` and the broker's message)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.message} (HTTP {self.status}{f', {self.code}' if self.code else ''})"


def segment(value: str) -> str:
    """A path segment with every reserved character escaped (``/`` in client ids)."""
    return quote(value, safe="")


class AdminClient:
    """Calls the admin API at ``url`` with ``api_key`` (sent as ``Authorization: Bearer``)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        tls: TLSOptions | ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._pool = HTTPPool(size=1, idle_timeout=None, tls=tls, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pool.aclose()

    async def raw(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` of one request (any status)."""
        url = self.url + path
        if query:
            pairs = {k: _query_value(v) for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urlencode(pairs)
        headers = [("accept", "application/json")]
        if self._api_key:
            headers.append(("authorization", f"Bearer {self._api_key}"))
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers.append(("content-type", "application/json"))
        try:
            response = await self._pool.request(method, url, body=data, headers=headers)
        except HTTPRequestError as exc:
            raise AdminClientError(f"cannot reach the broker at {self.url}: {exc}") from None
        return response.status, response.header("content-type") or "", response.body

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """The decoded JSON answer; raises :class:`AdminClientError` for an error status."""
        status, _ctype, data = await self.raw(method, path, query=query, body=body)
        try:
            value = json.loads(data) if data.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            value = None
        if status >= 400:
            if isinstance(value, dict) and "message" in value:
                raise AdminClientError(
                    str(value["message"]), status=status, code=str(value.get("error") or "")
                )
            text = data.decode("utf-8", "replace").strip()[:200]
            raise AdminClientError(text or "request failed", status=status)
        return value

    async def text(self, path: str) -> str:
        """A text resource (``/metrics``); raises :class:`AdminClientError` on error."""
        status, _ctype, data = await self.raw("GET", path)
        if status >= 400:
            raise AdminClientError(data.decode("utf-8", "replace").strip()[:200], status=status)
        return data.decode("utf-8", "replace")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
