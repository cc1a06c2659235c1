"""Micro-benchmark of the sans-IO MQTT codec (plugin_host.mqtt): PUBLISH parse and encode rates.

Run:  .venv/bin/python bench/codec_bench.py [--seconds 1.0]

Parsing feeds ~64 KiB chunks holding many packets (as one socket read delivers them), cut at
arbitrary offsets so packets straddle chunks. Encoding calls ``encode_publish`` per packet, as a
broker does per subscriber. Payload: 64 bytes, topic ``sensors/room-42/temperature``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from plugin_host.mqtt import Parser, Publish, encode, encode_publish

TOPIC = "sensors/room-42/temperature"
PAYLOAD = bytes(range(64))
PROPS = {"message_expiry_interval": 60, "user_property": [("source", "bench")]}
CHUNK = 65_536


def _rate(fn: Callable[[], int], seconds: float, rounds: int = 5) -> float:
    """Packets/second of ``fn`` (which returns how many packets it handled): the best of
    ``rounds`` rounds of ``seconds / rounds`` each, so other load on the machine skews less."""
    fn()  # warm-up
    best = 0.0
    for _ in range(rounds):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds / rounds
        while True:
            count += fn()
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def bench_parse(level: int, qos: int, props: dict[str, Any] | None, seconds: float) -> float:
    packet = encode_publish(TOPIC, PAYLOAD, qos, False, False, 1 if qos else None, props, level)
    per_stream = 4000
    stream = packet * per_stream
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]

    def run() -> int:
        # Server side, after CONNECT: what the broker does with its clients' PUBLISH packets.
        parser = Parser(server_side=True, protocol_level=level)
        n = 0
        for chunk in chunks:
            n += len(parser.feed(chunk))
        assert n == per_stream
        return n

    return _rate(run, seconds)


def bench_encode(level: int, qos: int, props: dict[str, Any] | None, seconds: float) -> float:
    batch = 1000
    pid = 1 if qos else None

    def run() -> int:
        for _ in range(batch):
            encode_publish(TOPIC, PAYLOAD, qos, False, False, pid, props, level)
        return batch

    return _rate(run, seconds)


def bench_encode_generic(
    level: int, qos: int, props: dict[str, Any] | None, seconds: float
) -> float:
    batch = 1000
    pkt = Publish(TOPIC, PAYLOAD, qos, False, False, 1 if qos else None, dict(props or {}))

    def run() -> int:
        for _ in range(batch):
            encode(pkt, level)
        return batch

    return _rate(run, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--seconds", type=float, default=2.0, help="time per measurement (best of 5 rounds)"
    )
    args = ap.parse_args()
    cases = [
        ("v3.1.1 qos0", 4, 0, None),
        ("v3.1.1 qos1", 4, 1, None),
        ("v5 qos0", 5, 0, None),
        ("v5 qos1", 5, 1, None),
        ("v5 qos0 +2 props", 5, 0, PROPS),
        ("v5 qos1 +2 props", 5, 1, PROPS),
    ]
    print(
        f"64-byte payload PUBLISH, topic {TOPIC!r}; packets/s, best of 5 rounds (higher is better)"
    )
    print(f"{'case':<20}{'parse':>12}{'encode_publish':>16}{'encode(Publish)':>17}")
    for name, level, qos, props in cases:
        p = bench_parse(level, qos, props, args.seconds)
        e = bench_encode(level, qos, props, args.seconds)
        g = bench_encode_generic(level, qos, props, args.seconds)
        print(f"{name:<20}{p:>12,.0f}{e:>16,.0f}{g:>17,.0f}")


if __name__ == "__main__":
    main()
