"""The benchmark webhook server's own limit, measured alone (no broker).

Starts ``webhook_server.py`` in its own process (pinned to one CPU), drives it from this process
(pinned to the other) with keep-alive HTTPS connections sending the kind of POST the webhooks
plugin sends, one request at a time per connection, and reports requests per second and the
server's CPU use. The figure that matters is the last one: **requests per CPU-second of the
server**, i.e. what it would serve at 100% of its core. The webhook benchmarks are valid while
the broker's request rate stays well below it.

    python bench/webhook_limit.py [--duration 5] [--connections 32] [--plain]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procstat import PidProbe

BENCH = Path(__file__).resolve().parent

REQUEST_BODY = json.dumps(
    {
        "peer_addr": "127.0.0.1",
        "peer_port": 40000,
        "mountpoint": "",
        "client_id": "bench-client",
        "username": None,
        "password": None,
        "clean_session": True,
    }
).encode()


def request(port: int) -> bytes:
    return (
        b"POST /auth HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
        b"vernemq-hook: auth_on_register\r\ncontent-length: %d\r\n\r\n" % (port, len(REQUEST_BODY))
    ) + REQUEST_BODY


async def client(port: int, context: ssl.SSLContext | None, until: float, counts: list[int]):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    data = request(port)
    done = 0
    while time.monotonic() < until:
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        done += 1
    counts.append(done)
    writer.close()


async def drive(port: int, context: ssl.SSLContext | None, connections: int, seconds: float):
    counts: list[int] = []
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(port, context, until, counts) for _ in range(connections)))
    return sum(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--plain", action="store_true", help="HTTP instead of HTTPS")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    with tempfile.TemporaryDirectory(prefix="webhook-limit-") as tmp:
        workdir = Path(tmp)
        server_cpu = cpus[-1:] if len(cpus) > 1 else []
        proc = subprocess.Popen(
            [sys.executable, str(BENCH / "webhook_server.py"), "--dir", str(workdir)]
            + (["--plain"] if args.plain else []),
            preexec_fn=(lambda: os.sched_setaffinity(0, server_cpu)) if server_cpu else None,  # noqa: PLW1509
        )
        try:
            port_file = workdir / "webhook.port"
            deadline = time.monotonic() + 30
            while not port_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the webhook server did not start")
                time.sleep(0.05)
            port = int(port_file.read_text())
            if server_cpu:
                os.sched_setaffinity(0, cpus[:1])
            context = None
            if not args.plain:
                context = ssl.create_default_context(cafile=str(workdir / "tls" / "ca.pem"))
            asyncio.run(drive(port, context, args.connections, 1.0))  # warm-up
            probe = PidProbe(proc.pid)
            cpu0, own0, t0 = probe.cpu_seconds() or 0.0, time.process_time(), time.monotonic()
            total = asyncio.run(drive(port, context, args.connections, args.duration))
            elapsed = time.monotonic() - t0
            server_cpu_s = (probe.cpu_seconds() or 0.0) - cpu0
            own = time.process_time() - own0
        finally:
            proc.terminate()
            proc.wait(10)
    rate = total / elapsed
    print(
        f"{'HTTP' if args.plain else 'HTTPS'} keep-alive, {args.connections} connections, "
        f"{args.duration:g} s: {rate:,.0f} requests/s; "
        f"server CPU {100 * server_cpu_s / elapsed:.0f}%, "
        f"client CPU {100 * own / elapsed:.0f}%; "
        f"server limit ~{total / server_cpu_s:,.0f} requests per CPU-second"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
