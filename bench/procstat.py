"""CPU and memory accounting for the benchmark: the broker's, the machine's and our own.

Linux only for the broker and machine figures (``/proc``); elsewhere they read as None and the
report says "n/a".
"""

from __future__ import annotations

import os
import resource
import time
from typing import Protocol


class BrokerProbe(Protocol):
    """What a scenario may ask of the broker process (``PidProbe`` implements it)."""

    def cpu_seconds(self) -> float | None: ...

    def rss_bytes(self) -> int | None: ...


class NoProbe:
    """A broker we know nothing about (no pid given)."""

    def cpu_seconds(self) -> float | None:
        return None

    def rss_bytes(self) -> int | None:
        return None


def cpu_self() -> float:
    """CPU seconds (user + system) this process has used so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class PidProbe:
    """CPU and RSS of a process (and its descendants) from /proc (Linux)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ticks = os.sysconf("SC_CLK_TCK")

    def _tree(self) -> list[int]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        return pids

    def cpu_seconds(self) -> float | None:
        total = 0
        try:
            for pid in self._tree():
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            return None
        return total / self._ticks

    def rss_bytes(self) -> int | None:
        total = 0
        try:
            for pid in self._tree():
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
        return total


def system_cpu_seconds() -> tuple[float, float] | None:
    """(process time, interrupt time) all CPUs of the machine have used so far (/proc/stat).

    Interrupt time (irq, softirq) is kept apart: loopback TCP is partly processed there, so it
    grows with the benchmark's own traffic and says nothing about other processes.
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + steal) / tick, (irq + softirq) / tick


class Window:
    """CPU accounting over a measurement window: broker, whole machine, and (later) us."""

    def __init__(self, broker: BrokerProbe) -> None:
        self.broker = broker
        self.t0 = time.monotonic()
        self.broker0 = broker.cpu_seconds()
        self.system0 = system_cpu_seconds()
        self.self0 = cpu_self()

    def close(self) -> None:
        self.t1 = time.monotonic()
        self.broker1 = self.broker.cpu_seconds()
        self.system1 = system_cpu_seconds()
        self.self1 = cpu_self()

    def broker_pct(self) -> float | None:
        if self.broker0 is None or self.broker1 is None:
            return None
        return 100.0 * (self.broker1 - self.broker0) / (self.t1 - self.t0)

    def interrupts_pct(self) -> float | None:
        if self.system0 is None or self.system1 is None:
            return None
        return 100.0 * (self.system1[1] - self.system0[1]) / (self.t1 - self.t0)

    def other_pct(self, loadgen_pct: float) -> float | None:
        """CPU used by processes that are neither the broker nor the load generator.

        Another test suite running on the machine makes every figure lower and noisier: this
        is how a result tells whether that happened.
        """
        broker = self.broker_pct()
        if self.system0 is None or self.system1 is None or broker is None:
            return None
        system = 100.0 * (self.system1[0] - self.system0[0]) / (self.t1 - self.t0)
        driver = 100.0 * (self.self1 - self.self0) / (self.t1 - self.t0)
        return max(0.0, system - broker - loadgen_pct - driver)
