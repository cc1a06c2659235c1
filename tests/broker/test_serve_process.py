"""`plugin-host serve` as a real process: it serves, and SIGTERM / SIGINT shut it down cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import trio

from plugin_host.testing import open_client

SERVE = [
    sys.executable,
    "-c",
    "from plugin_host.cli import main; main()",
    "serve",
    "--listen",
    "127.0.0.1:0",
]


async def _start() -> tuple[trio.Process, tuple[str, int], list[str]]:
    process = await trio.lowlevel.open_process(
        [*SERVE, "--log-format", "json", "--allow-anonymous"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    buffer = b""
    assert process.stdout is not None
    with trio.fail_after(30):
        while True:
            chunk = await process.stdout.receive_some(4096)
            assert chunk, f"serve exited early: {lines}"
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode()
                lines.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "listening":
                    return process, (event["host"], event["port"]), lines


async def _finish(process: trio.Process, lines: list[str]) -> list[str]:
    assert process.stdout is not None
    with trio.fail_after(30):
        rest = b""
        while chunk := await process.stdout.receive_some(65536):
            rest += chunk
        await process.wait()
    return lines + rest.decode().splitlines()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_shuts_down_gracefully_on_signal(signum):
    process, address, lines = await _start()
    try:
        async with (
            open_client(address, client_id="v5", protocol=5) as v5,
            open_client(address, client_id="v3") as v3,
        ):
            await v3.subscribe("t", qos=1)
            await v5.publish("t", b"through the real server", qos=1)
            assert (await v3.receive()).payload == b"through the real server"
            process.send_signal(signum)
            await v5.wait_closed()
            await v3.wait_closed()
            assert v5.server_disconnect is not None
            assert v5.server_disconnect.reason_code == 0x8B
        output = await _finish(process, lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = "\n".join(output)
    assert "Traceback" not in text
    events = [json.loads(line).get("event") for line in output if line.startswith("{")]
    assert "shutting_down" in events and "stopped" in events
    assert process.returncode in (0, 130)
