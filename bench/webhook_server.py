"""A fast HTTPS webhook endpoint for the benchmarks: every POST gets ``{"result": "ok"}``.

It runs in its own process (``brokers.webhook_service`` starts it for the webhook and Lua HTTPS
variants, pinned to the load generator's CPU) and must not be what limits the broker, so it is
small on purpose: asyncio protocols, HTTP/1.1 keep-alive, a hand-written request reader
(request line, ``content-length`` body; no chunked uploads, which neither the webhooks plugin
nor the Lua ``http`` module sends) and one pre-built response. ``bench/webhook_limit.py``
measures how many requests it serves per CPU-second on its own.

    python bench/webhook_server.py --dir WORKDIR [--max-age 60] [--plain]

writes ``WORKDIR/tls/ca.pem`` (a private CA made with trustme, for the broker to trust) and,
once listening, ``WORKDIR/webhook.port``. ``--max-age N`` adds ``Cache-Control: max-age=N`` to
every answer (the webhooks plugin then caches auth_on_register / auth_on_publish results).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from pathlib import Path

BODY = b'{"result": "ok"}'


def response(max_age: int) -> bytes:
    headers = [
        b"HTTP/1.1 200 OK",
        b"content-type: application/json",
        b"content-length: " + str(len(BODY)).encode(),
    ]
    if max_age:
        headers.append(b"cache-control: max-age=" + str(max_age).encode())
    return b"\r\n".join(headers) + b"\r\n\r\n" + BODY


class Stats:
    requests = 0


class WebhookProtocol(asyncio.Protocol):
    """One keep-alive connection: answers every complete request with the same response."""

    def __init__(self, answer: bytes, stats: type[Stats]) -> None:
        self.answer = answer
        self.stats = stats
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                length = int(head[at + 15 : line_end if line_end >= 0 else len(head)])
            total = end + 4 + length
            if len(buffer) < total:
                break
            buffer = buffer[total:]
            answers += 1
        self.buffer = buffer
        if answers and self.transport is not None:
            self.stats.requests += answers
            self.transport.write(self.answer * answers)


async def serve(workdir: Path, max_age: int, plain: bool, host: str) -> None:
    context = None
    if not plain:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert(host, "localhost")
        (workdir / "tls").mkdir(exist_ok=True)
        ca.cert_pem.write_to_path(str(workdir / "tls" / "ca.pem"))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
    loop = asyncio.get_running_loop()
    answer = response(max_age)
    server = await loop.create_server(
        lambda: WebhookProtocol(answer, Stats), host, 0, ssl=context, backlog=1024
    )
    port = server.sockets[0].getsockname()[1]
    tmp = workdir / "webhook.port.tmp"
    tmp.write_text(str(port))
    tmp.rename(workdir / "webhook.port")  # atomic: the harness never reads half a number
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"requests served: {Stats.requests}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where ca.pem and the port go")
    parser.add_argument("--max-age", type=int, default=0, help="Cache-Control max-age (s)")
    parser.add_argument("--plain", action="store_true", help="HTTP instead of HTTPS")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    asyncio.run(serve(args.dir, args.max_age, args.plain, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
