"""MQTT load generator for the broker comparison (``bench/compare.py``), also usable alone.

It is built so that it is never the bottleneck against a single-core Python broker:

* publishers send pre-encoded batches of PUBLISH packets with one ``send_all`` per batch (QoS 0
  floods; QoS 1 keeps a window of outstanding PUBACKs, counted 4 bytes at a time);
* subscribers whose packets all have the same size count bytes (checking the packet type at every
  record boundary) and build their PUBACKs with C-level slicing; only the latency subscriber
  parses frames, at 1000 msg/s;
* clients run as trio tasks in one or more worker processes (``--workers``), each of which
  measures its own CPU time over the measurement window, so every figure comes with the load
  generator's CPU use next to the broker's.

A scenario runs in phases: the workers connect (subscribers first) and report ready; the driver
(``run_scenario``) sends everyone the same start/end instants on the shared monotonic clock; the
publishers run through a warm-up and the measurement window; counters are snapshotted at both
instants; then the publishers stop and subscribers drain what is still in flight (so losses can
be counted) before everything disconnects.

Run one scenario against a broker that is already running::

    python bench/loadgen.py fanin-qos0 --port 1883 [--pid BROKER_PID] [--duration 10]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wire
from clients import (
    Client,
    CountingSubscriber,
    FloodPublisher,
    Flow,
    LatencySubscriber,
    PacedPublisher,
    Stopper,
    WindowPublisher,
    open_client,
    sleep_until_monotonic,
)
from procstat import BrokerProbe, NoProbe, PidProbe, Window, cpu_self


@dataclass
class LoadOptions:
    """Everything a scenario needs to know; every field is a ``compare.py`` option too."""

    host: str = "127.0.0.1"
    port: int = 1883
    duration: float = 10.0  # seconds of measurement per scenario
    warmup: float = 2.0  # seconds of load before the measurement window opens
    drain: float = 5.0  # longest wait for in-flight messages once publishers stop
    workers: int = 1  # processes for the connection storm (throughput scenarios use one)
    payload_size: int = 64
    batch: int = 100  # QoS 0 PUBLISH packets per send_all
    qos1_window: int = 100  # outstanding PUBACKs per QoS 1 publisher
    # per subscriber, messages published but not yet received (see Flow); QoS 1 stays below
    # the usual broker queue limit of 1000 messages per client
    pending_qos0: int = 10000
    pending_qos1: int = 500
    fanin_publishers: int = 8
    fanout_subscribers: int = 50
    storm_connections: int = 2000
    storm_concurrency: int = 50
    churn_ids: int = 100  # conn-churn: the client ids that connect again and again
    latency_rate: float = 1000.0  # messages per second
    username: str | None = None
    password: str | None = None
    connect_timeout: float = 30.0
    cpus: list[int] = field(default_factory=list)  # pin workers to these CPUs ([] = no pinning)


# --------------------------------------------------------------------------------------------
# Worker side of the driver link


class WorkerLink:
    """The worker's end of the pipe to the driver."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, msg: dict[str, Any]) -> None:
        self.conn.send(msg)

    async def recv(self) -> dict[str, Any]:
        msg: dict[str, Any] = await trio.to_thread.run_sync(self.conn.recv, abandon_on_cancel=True)
        if msg.get("abort"):
            raise Aborted
        return msg


class Aborted(Exception):
    """The driver gave up on this scenario (error elsewhere, or Ctrl-C)."""


# --------------------------------------------------------------------------------------------
# Scenarios: the worker part (in each worker) and the driver part (in the caller's process)


@dataclass(frozen=True)
class Metric:
    """One reported figure: key in the result dict, table label, unit, and its direction."""

    key: str
    label: str
    unit: str
    higher_is_better: bool = True
    digits: int = 0


@dataclass
class Scenario:
    name: str
    title: str
    metrics: list[Metric]
    plan: Callable[[LoadOptions], list[dict[str, Any]]]  # one spec per worker
    worker: Callable[[dict[str, Any], LoadOptions, WorkerLink], Any]  # async
    drive: Callable[[WorkerSet, BrokerProbe, LoadOptions], dict[str, Any]]
    default: bool = True


def _split(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into ``parts`` contiguous, nearly equal pieces."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


def _payload(opts: LoadOptions) -> bytes:
    return bytes(range(97, 97 + 26)) * (opts.payload_size // 26) + b"z" * (opts.payload_size % 26)


def _workers(opts: LoadOptions, roles: int) -> int:
    return max(1, min(opts.workers, roles))


# Throughput scenarios share one worker routine; the plan says which clients it runs. They run
# in a single process: end-to-end flow control (Flow) needs the subscribers' counts next to the
# publishers, and one process is far from saturated by any Python broker (see loadgen CPU).


def plan_fanin(
    qos: int, persistent: bool = False, flood: bool = False
) -> Callable[[LoadOptions], list[dict[str, Any]]]:
    def plan(opts: LoadOptions) -> list[dict[str, Any]]:
        return [
            {
                "flow": not flood,
                "subs": [
                    {
                        "id": "fi-sub",
                        "filter": "bench/fanin/#",
                        "topic": "bench/fanin/000",
                        "qos": qos,
                        "clean": not persistent,
                    }
                ],
                "pubs": [
                    {"id": f"fi-pub-{i}", "topic": f"bench/fanin/{i:03d}", "qos": qos}
                    for i in range(opts.fanin_publishers)
                ],
            }
        ]

    return plan


def plan_fanout(opts: LoadOptions) -> list[dict[str, Any]]:
    return [
        {
            "flow": True,
            "subs": [
                {
                    "id": f"fo-sub-{i}",
                    "filter": "bench/fanout",
                    "topic": "bench/fanout",
                    "qos": 0,
                    "clean": True,
                }
                for i in range(opts.fanout_subscribers)
            ],
            "pubs": [{"id": "fo-pub", "topic": "bench/fanout", "qos": 0}],
        }
    ]


def plan_latency(opts: LoadOptions) -> list[dict[str, Any]]:
    # publisher and subscriber in one process: one clock, and nothing else competing
    return [
        {
            "flow": False,
            "subs": [{"id": "lat-sub", "filter": "bench/latency", "qos": 0, "latency": True}],
            "pubs": [{"id": "lat-pub", "topic": "bench/latency", "qos": 0, "paced": True}],
        }
    ]


async def throughput_worker(spec: dict[str, Any], opts: LoadOptions, link: WorkerLink) -> None:
    payload = _payload(opts)
    # deliveries published but not yet received, at most `pending` per subscriber
    pending = opts.pending_qos1 if any(s["qos"] for s in spec["subs"]) else opts.pending_qos0
    flow = Flow(pending * len(spec["subs"]), fanout=len(spec["subs"])) if spec["flow"] else None
    subs: list[CountingSubscriber | LatencySubscriber] = []
    pubs: list[FloodPublisher | WindowPublisher | PacedPublisher] = []
    try:
        with trio.fail_after(opts.connect_timeout):
            for s in spec["subs"]:
                client = await open_client(opts, s["id"], clean_session=s.get("clean", True))
                await client.subscribe(s["filter"], s["qos"])
                if s.get("latency"):
                    subs.append(LatencySubscriber(client))
                else:
                    subs.append(
                        CountingSubscriber(client, s["topic"], opts.payload_size, s["qos"], flow)
                    )
            for p in spec["pubs"]:
                client = await open_client(opts, p["id"])
                if p.get("paced"):
                    pubs.append(
                        PacedPublisher(client, p["topic"], opts.payload_size, opts.latency_rate)
                    )
                elif p["qos"]:
                    pubs.append(
                        WindowPublisher(client, p["topic"], payload, opts.qos1_window, flow)
                    )
                else:
                    pubs.append(FloodPublisher(client, p["topic"], payload, opts.batch, flow))
    except trio.TooSlowError:
        raise wire.ProtocolMismatch(
            f"clients not connected and subscribed within {opts.connect_timeout} s"
        ) from None
    link.send({"ready": True})
    go = await link.recv()
    t_start, t_end = go["t_start"], go["t_end"]
    for s in subs:
        if isinstance(s, LatencySubscriber):
            s.window = (int(t_start * 1e9), int(t_end * 1e9))

    def snapshot() -> dict[str, Any]:
        return {
            "t": time.monotonic(),
            "cpu": cpu_self(),
            "subs": [s.counters() for s in subs],
            "pubs": [p.counters() for p in pubs],
        }

    stop = Stopper()
    snaps: list[dict[str, Any]] = []
    notes: list[str] = []
    async with trio.open_nursery() as nursery:
        for s in subs:
            nursery.start_soon(s.run)
        async with trio.open_nursery() as pub_nursery:
            for p in pubs:
                pub_nursery.start_soon(p.run, stop)
            await sleep_until_monotonic(t_start)
            snaps.append(snapshot())
            await sleep_until_monotonic(t_end)
            snaps.append(snapshot())
            stop.stopping = True
            # a flood publisher may sit in send_all while the broker is behind: give it the
            # drain time to finish its batch, then cut it off
            pub_nursery.cancel_scope.deadline = trio.current_time() + opts.drain
        if pub_nursery.cancel_scope.cancelled_caught:
            notes.append("publishers were still blocked sending when the drain time ran out")
        # drain: wait until the subscribers have been quiet for a while
        deadline = time.monotonic() + opts.drain
        drained = False
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = sum(s.received for s in subs)
            if total != last:
                last, quiet_since = total, time.monotonic()
            elif time.monotonic() - quiet_since >= min(1.0, opts.drain / 2):
                drained = True
                break
            await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    final = snapshot()
    latencies: list[int] = []
    for s in subs:
        if isinstance(s, LatencySubscriber):
            latencies.extend(s.samples)
    async with trio.open_nursery() as nursery:
        for c in [s.client for s in subs] + [p.client for p in pubs]:
            nursery.start_soon(c.disconnect)
    if flow is not None and flow.write_offs:
        notes.append(
            f"publishers stalled {flow.write_offs} times for 1 s waiting for "
            f"{flow.written_off} deliveries that never came"
        )
    flow_stats = {"waits": flow.waits, "write_offs": flow.write_offs} if flow else {}
    link.send(
        {
            "snaps": snaps,
            "final": final,
            "latencies": latencies,
            "notes": notes,
            "flow": flow_stats,
            "drained": drained,
        }
    )


def _rates(results: list[dict[str, Any]], role: str, key: str) -> float:
    """Sum over workers and clients of the counter's increase per second in the window."""
    total = 0.0
    for r in results:
        a, b = r["snaps"]
        dt = b["t"] - a["t"]
        for ca, cb in zip(a[role], b[role], strict=True):
            total += (cb[key] - ca[key]) / dt
    return total


def _final_sum(results: list[dict[str, Any]], role: str, key: str) -> int:
    return sum(c[key] for r in results for c in r["final"][role])


def _cpu_pct(results: list[dict[str, Any]]) -> float:
    """Load generator CPU over the window, in percent of one core (summed over workers)."""
    return 100.0 * sum(
        (r["snaps"][1]["cpu"] - r["snaps"][0]["cpu"]) / (r["snaps"][1]["t"] - r["snaps"][0]["t"])
        for r in results
    )


OTHER_LOAD_WARNING = 15.0  # % of one core used by unrelated processes during a measurement


def _finish(
    out: dict[str, Any],
    window: Window,
    notes: list[str],
    results: list[dict[str, Any]] | None = None,
    opts: LoadOptions | None = None,
) -> dict[str, Any]:
    """Add the CPU accounting, and tell lost messages from ones still in flight."""
    if results is not None and not all(r.get("drained", True) for r in results):
        # the broker still had a backlog when we stopped waiting: not a loss (yet)
        out["undelivered"] = out.pop("lost", 0)
        out["lost"] = None
        drain = opts.drain if opts else "the"
        notes.append(
            f"{out['undelivered']:,} deliveries were still in flight when the {drain} s drain "
            "time ran out (a backlog, not counted as lost)"
        )
    elif out.get("lost"):
        if "acked_total" in out:
            notes.append(f"{out['lost']:,} PUBACKed messages never reached the subscriber")
        else:
            notes.append(f"{out['lost']:,} messages sent but never received (QoS 0 drops)")
    out["broker_cpu_pct"] = window.broker_pct()
    out["other_cpu_pct"] = window.other_pct(out["loadgen_cpu_pct"])
    out["interrupts_cpu_pct"] = window.interrupts_pct()
    if (out["other_cpu_pct"] or 0) > OTHER_LOAD_WARNING:
        notes.append(
            f"other processes used {out['other_cpu_pct']:.0f}% of a core during the "
            "measurement: this figure is likely low"
        )
    out["notes"] = notes
    return out


def _run_window(ws: WorkerSet, broker: BrokerProbe, opts: LoadOptions) -> tuple[Any, ...]:
    """Common driver: everyone ready, same window for all, CPU accounting over the window."""
    ws.gather("ready", timeout=opts.connect_timeout + 10)
    t_start = time.monotonic() + opts.warmup
    t_end = t_start + opts.duration
    ws.broadcast({"t_start": t_start, "t_end": t_end})
    _sleep_until(t_start)
    window = Window(broker)
    _sleep_until(t_end)
    window.close()
    results = ws.gather("results", timeout=3 * opts.drain + 30)
    notes = [n for r in results for n in r["notes"]]
    return results, window, notes


def drive_fanin(ws: WorkerSet, broker: BrokerProbe, opts: LoadOptions) -> dict[str, Any]:
    results, window, notes = _run_window(ws, broker, opts)
    received = _final_sum(results, "subs", "received")
    out = {
        "msgs_per_s": _rates(results, "subs", "received"),
        "offered_per_s": _rates(results, "pubs", "sent"),
        "loadgen_cpu_pct": _cpu_pct(results),
        "sent_total": _final_sum(results, "pubs", "sent"),
        "received_total": received,
    }
    if any("acked" in c for r in results for c in r["final"]["pubs"]):
        acked = _final_sum(results, "pubs", "acked")
        out["acked_per_s"] = _rates(results, "pubs", "acked")
        out["acked_total"] = acked
        # every message the broker acknowledged must reach the QoS 1 subscriber
        out["lost"] = max(0, acked - received)
    else:
        out["lost"] = max(0, out["sent_total"] - received)
    return _finish(out, window, notes, results, opts)


def drive_fanout(ws: WorkerSet, broker: BrokerProbe, opts: LoadOptions) -> dict[str, Any]:
    results, window, notes = _run_window(ws, broker, opts)
    per_sub = [
        (cb["received"] - ca["received"]) / (r["snaps"][1]["t"] - r["snaps"][0]["t"])
        for r in results
        for ca, cb in zip(r["snaps"][0]["subs"], r["snaps"][1]["subs"], strict=True)
    ]
    sent = _final_sum(results, "pubs", "sent")
    received = _final_sum(results, "subs", "received")
    out = {
        "deliveries_per_s": sum(per_sub),
        "publish_per_s": _rates(results, "pubs", "sent"),
        "slowest_sub_per_s": min(per_sub),
        "fastest_sub_per_s": max(per_sub),
        "loadgen_cpu_pct": _cpu_pct(results),
        "sent_total": sent,
        "received_total": received,
        "lost": max(0, sent * opts.fanout_subscribers - received),
    }
    return _finish(out, window, notes, results, opts)


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[k])


def drive_latency(ws: WorkerSet, broker: BrokerProbe, opts: LoadOptions) -> dict[str, Any]:
    results, window, notes = _run_window(ws, broker, opts)
    samples = sorted(v for r in results for v in r["latencies"])
    sent_in_window = _rates(results, "pubs", "sent") * opts.duration
    ms = 1e-6
    out = {
        "p50_ms": _percentile(samples, 0.50) * ms,
        "p99_ms": _percentile(samples, 0.99) * ms,
        "max_ms": (samples[-1] * ms) if samples else float("nan"),
        "samples": len(samples),
        "rate_per_s": _rates(results, "pubs", "sent"),
        "loadgen_cpu_pct": _cpu_pct(results),
        "lost": max(
            0, _final_sum(results, "pubs", "sent") - _final_sum(results, "subs", "received")
        ),
    }
    if len(samples) < 0.99 * sent_in_window:
        notes.append(f"only {len(samples)} of ~{sent_in_window:.0f} messages sampled")
    return _finish(out, window, notes, results, opts)


def plan_storm(opts: LoadOptions) -> list[dict[str, Any]]:
    n = _workers(opts, opts.storm_concurrency)
    conc = _split(opts.storm_concurrency, n)
    return [
        {"ids": [rng.start, rng.stop], "concurrency": len(conc[w])}
        for w, rng in enumerate(_split(opts.storm_connections, n))
    ]


async def storm_worker(spec: dict[str, Any], opts: LoadOptions, link: WorkerLink) -> None:
    link.send({"ready": True})
    await link.recv()
    ids: Iterator[int] = iter(range(*spec["ids"]))
    clients: list[Client] = []
    failures: list[str] = []

    async def connector() -> None:
        for i in ids:
            try:
                with trio.fail_after(opts.connect_timeout):
                    clients.append(await open_client(opts, f"storm-{i}"))
            except (OSError, wire.ProtocolMismatch, trio.TooSlowError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    t0, cpu0 = time.monotonic(), cpu_self()
    async with trio.open_nursery() as nursery:
        for _ in range(spec["concurrency"]):
            nursery.start_soon(connector)
    t1, cpu1 = time.monotonic(), cpu_self()
    link.send({"t0": t0, "t1": t1, "cpu": cpu1 - cpu0, "ok": len(clients), "failures": failures})
    await link.recv()  # the driver has measured the broker's memory with everyone connected
    async with trio.open_nursery() as nursery:
        for c in clients:
            nursery.start_soon(c.disconnect)
    link.send({"closed": True})


def drive_storm(ws: WorkerSet, broker: BrokerProbe, opts: LoadOptions) -> dict[str, Any]:
    ws.gather("ready", timeout=opts.connect_timeout)
    rss_idle = broker.rss_bytes()
    window = Window(broker)
    ws.broadcast({"go": True})
    results = ws.gather("connected", timeout=opts.connect_timeout * 4 + 60)
    window.close()
    # let the broker finish what the last CONNACKs set in motion before reading its memory
    time.sleep(1.0)
    rss_after = broker.rss_bytes()
    ws.broadcast({"release": True})
    ws.gather("closed", timeout=60)
    t0 = min(r["t0"] for r in results)
    t1 = max(r["t1"] for r in results)
    ok = sum(r["ok"] for r in results)
    failures = [f for r in results for f in r["failures"]]
    notes = []
    if failures:
        notes.append(f"{len(failures)} connects failed, e.g. {failures[0]}")
    per_conn = None
    if rss_idle is not None and rss_after is not None and ok:
        per_conn = (rss_after - rss_idle) / ok / 1024
    out = {
        "connects_per_s": ok / (t1 - t0),
        "connected": ok,
        "failed": len(failures),
        "rss_idle_mib": None if rss_idle is None else rss_idle / 2**20,
        "rss_after_mib": None if rss_after is None else rss_after / 2**20,
        "rss_per_conn_kib": per_conn,
        "loadgen_cpu_pct": 100.0 * sum(r["cpu"] for r in results) / (window.t1 - window.t0),
    }
    return _finish(out, window, notes)


def plan_churn(opts: LoadOptions) -> list[dict[str, Any]]:
    n = _workers(opts, opts.storm_concurrency)
    conc = _split(opts.storm_concurrency, n)
    ids = _split(max(opts.churn_ids, opts.storm_concurrency), n)
    return [
        {"connects": len(rng), "concurrency": len(conc[w]), "ids": [ids[w].start, ids[w].stop]}
        for w, rng in enumerate(_split(opts.storm_connections, n))
    ]


async def churn_worker(spec: dict[str, Any], opts: LoadOptions, link: WorkerLink) -> None:
    """Connect, get CONNACK, disconnect; again and again with the same few client ids (each
    connector owns its ids, so no connect takes over another's session)."""
    link.send({"ready": True})
    await link.recv()
    left = iter(range(spec["connects"]))
    first, last = spec["ids"]
    concurrency = spec["concurrency"]
    failures: list[str] = []
    done = 0

    async def connector(k: int) -> None:
        nonlocal done
        own = list(range(first + k, last, concurrency)) or [first + k]
        for n in left:
            client_id = f"churn-{own[n % len(own)]}"
            try:
                with trio.fail_after(opts.connect_timeout):
                    client = await open_client(opts, client_id)
                await client.disconnect()
                done += 1
            except (OSError, wire.ProtocolMismatch, trio.TooSlowError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    t0, cpu0 = time.monotonic(), cpu_self()
    async with trio.open_nursery() as nursery:
        for k in range(concurrency):
            nursery.start_soon(connector, k)
    t1, cpu1 = time.monotonic(), cpu_self()
    link.send({"t0": t0, "t1": t1, "cpu": cpu1 - cpu0, "ok": done, "failures": failures})


def drive_churn(ws: WorkerSet, broker: BrokerProbe, opts: LoadOptions) -> dict[str, Any]:
    ws.gather("ready", timeout=opts.connect_timeout)
    window = Window(broker)
    ws.broadcast({"go": True})
    results = ws.gather("done", timeout=opts.connect_timeout * 4 + 120)
    window.close()
    t0 = min(r["t0"] for r in results)
    t1 = max(r["t1"] for r in results)
    ok = sum(r["ok"] for r in results)
    failures = [f for r in results for f in r["failures"]]
    notes = [f"{len(failures)} connects failed, e.g. {failures[0]}"] if failures else []
    out = {
        "connects_per_s": ok / (t1 - t0),
        "connected": ok,
        "failed": len(failures),
        "loadgen_cpu_pct": 100.0 * sum(r["cpu"] for r in results) / (window.t1 - window.t0),
    }
    return _finish(out, window, notes)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "fanin-qos0",
            "fan-in QoS 0: 8 publishers -> 1 wildcard subscriber, 64-byte payloads",
            [Metric("msgs_per_s", "fan-in QoS 0", "msg/s")],
            plan_fanin(0),
            throughput_worker,
            drive_fanin,
        ),
        Scenario(
            "fanin-qos1",
            "fan-in QoS 1: 8 publishers (window 100) -> 1 wildcard subscriber at QoS 1",
            [Metric("msgs_per_s", "fan-in QoS 1", "msg/s")],
            plan_fanin(1),
            throughput_worker,
            drive_fanin,
        ),
        Scenario(
            "fanout-qos0",
            "fan-out QoS 0: 1 publisher -> 50 subscribers",
            [Metric("deliveries_per_s", "fan-out QoS 0", "deliveries/s")],
            plan_fanout,
            throughput_worker,
            drive_fanout,
        ),
        Scenario(
            "conn-storm",
            "connection storm: 2000 MQTT connects (50 at a time), held open",
            [
                Metric("connects_per_s", "connect storm", "conn/s"),
                Metric("rss_after_mib", "RSS with 2000 clients", "MiB", False, 1),
                Metric("rss_per_conn_kib", "RSS per connection", "KiB", False, 1),
            ],
            plan_storm,
            storm_worker,
            drive_storm,
        ),
        Scenario(
            "latency",
            "latency at a steady 1000 msg/s QoS 0, 1 publisher -> 1 subscriber",
            [
                Metric("p50_ms", "latency p50", "ms", False, 3),
                Metric("p99_ms", "latency p99", "ms", False, 3),
            ],
            plan_latency,
            throughput_worker,
            drive_latency,
        ),
        Scenario(
            "fanin-qos0-flood",
            "fan-in QoS 0 without end-to-end flow control: overload and back-pressure behaviour",
            [Metric("msgs_per_s", "fan-in QoS 0 flood", "msg/s")],
            plan_fanin(0, flood=True),
            throughput_worker,
            drive_fanin,
            default=False,
        ),
        Scenario(
            "conn-churn",
            "connection churn: 2000 connect + CONNACK + disconnect (50 at a time) by 100 "
            "client ids that come back (what a cache of auth_on_register answers helps)",
            [Metric("connects_per_s", "connect churn", "conn/s")],
            plan_churn,
            churn_worker,
            drive_churn,
            default=False,
        ),
        Scenario(
            "fanin-qos1-persistent",
            "fan-in QoS 1 to a persistent (clean_session=0) subscriber",
            [Metric("msgs_per_s", "fan-in QoS 1 persistent sub", "msg/s")],
            plan_fanin(1, persistent=True),
            throughput_worker,
            drive_fanin,
            default=False,
        ),
    ]
}


# --------------------------------------------------------------------------------------------
# Worker processes and the driver's view of them


class ScenarioError(Exception):
    """A scenario could not produce a figure (broker refused, stalled, or a worker failed)."""


def _worker_entry(scenario: str, spec: dict[str, Any], opts: LoadOptions, conn: Connection) -> None:
    # Ctrl-C goes to the whole foreground process group: the driver handles it and stops us;
    # SIGTERM (from the driver, when we do not finish on our own) ends us at once, whatever
    # handler the driver installed before forking
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if opts.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, opts.cpus)
    _raise_fd_limit()
    link = WorkerLink(conn)
    try:
        trio.run(SCENARIOS[scenario].worker, spec, opts, link)
    except Aborted:
        pass
    except BaseException as exc:  # reported to the driver, which owns the decision
        detail = (
            str(exc)
            if isinstance(exc, wire.ProtocolMismatch | OSError)
            else traceback.format_exc(limit=8)
        )
        with contextlib.suppress(OSError):
            conn.send({"error": f"{type(exc).__name__}: {detail}"})


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class WorkerSet:
    """The driver's handle on the worker processes of one scenario."""

    def __init__(self, procs: list[tuple[multiprocessing.process.BaseProcess, Connection]]):
        self.procs = procs

    def broadcast(self, msg: dict[str, Any]) -> None:
        for _, conn in self.procs:
            conn.send(msg)

    def gather(self, phase: str, timeout: float) -> list[dict[str, Any]]:
        """One message from every worker, or ScenarioError naming the phase that failed."""
        deadline = time.monotonic() + timeout
        out = []
        for proc, conn in self.procs:
            while not conn.poll(0.1):
                if not proc.is_alive() and not conn.poll(0):
                    raise ScenarioError(f"{phase}: load generator worker died")
                if time.monotonic() > deadline:
                    raise ScenarioError(
                        f"{phase}: no answer from the load generator in {timeout:.0f} s"
                    )
            msg = conn.recv()
            if "error" in msg:
                raise ScenarioError(f"{phase}: {msg['error']}")
            out.append(msg)
        return out

    def stop(self) -> None:
        for proc, conn in self.procs:
            if proc.is_alive():
                with contextlib.suppress(OSError):
                    conn.send({"abort": True})
        for proc, _ in self.procs:
            proc.join(timeout=3)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for _, conn in self.procs:
            conn.close()


def run_scenario(name: str, opts: LoadOptions, broker: BrokerProbe | None = None) -> dict[str, Any]:
    """Run one scenario against the broker at ``opts.host:opts.port``; returns its figures.

    Raises ScenarioError when no figure could be obtained. Worker processes never outlive
    this call, whatever happens (including KeyboardInterrupt).
    """
    scenario = SCENARIOS[name]
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    procs = []
    ws = WorkerSet(procs)
    try:
        for spec in scenario.plan(opts):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_entry,
                args=(name, spec, opts, child),
                daemon=True,
                name=f"loadgen-{name}",
            )
            proc.start()
            child.close()
            procs.append((proc, parent))
        result = scenario.drive(ws, broker or NoProbe(), opts)
        result["workers"] = len(procs)
        return result
    finally:
        ws.stop()


# --------------------------------------------------------------------------------------------
# Command line: one scenario against a running broker


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """The LoadOptions fields as ``--dashed-options`` (shared with compare.py)."""
    defaults = LoadOptions()
    for f in dataclasses.fields(LoadOptions):
        if f.name in ("host", "port", "cpus"):
            continue
        default = getattr(defaults, f.name)
        kind = type(default) if default is not None else str
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=kind, default=default, metavar=f.name.upper()
        )


def options_from_args(args: argparse.Namespace, **overrides: Any) -> LoadOptions:
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(LoadOptions)
        if hasattr(args, f.name)
    }
    values.update(overrides)
    return LoadOptions(**values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--pid", type=int, help="broker pid, for its CPU and RSS (Linux)")
    add_load_options(parser)
    args = parser.parse_args(argv)
    opts = options_from_args(args, host=args.host, port=args.port)
    probe = PidProbe(args.pid) if args.pid else None
    try:
        result = run_scenario(args.scenario, opts, probe)
    except ScenarioError as exc:
        print(f"{args.scenario}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
