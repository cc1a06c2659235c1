"""Side-by-side benchmark: the same scenarios against every broker variant, in one run.

For each scenario, each selected variant (``brokers.VARIANTS``) is started fresh on an ephemeral
loopback port, pinned to one CPU (the load generator gets the others), waited for until it answers
MQTT, loaded by ``loadgen.py`` and stopped gracefully. The script prints a Markdown table (rows:
figures, columns: brokers, plus ratio columns such as plugin-host/amqtt), the CPU used by the load
generator and by each broker, the exact command and the machine, and writes everything as JSON
(with the broker logs beside it) under ``bench/results/``.

    python bench/compare.py                                   # all default brokers and scenarios
    python bench/compare.py --brokers plugin-host,amqtt --scenarios fanin-qos0,latency --duration 5
    python bench/compare.py --list                            # variants and scenarios known

Every process it starts is stopped when it ends, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadgen
from brokers import (
    AMQTT_SPEC,
    BENCH_DIR,
    VARIANTS,
    BrokerError,
    RunContext,
    Tools,
    Variant,
    free_port,
    running_broker,
    variant,
)

LOADGEN_BOUND = 0.85  # load generator CPU share above which a figure is only a lower bound


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--brokers",
        type=_csv,
        help="comma-separated variant names (default: "
        + ",".join(v.name for v in VARIANTS if v.default)
        + ")",
    )
    parser.add_argument(
        "--scenarios",
        type=_csv,
        help="comma-separated scenario names (default: "
        + ",".join(n for n, s in loadgen.SCENARIOS.items() if s.default)
        + ")",
    )
    parser.add_argument("--list", action="store_true", help="list variants and scenarios, exit")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to use")
    parser.add_argument(
        "--broker-cpu",
        type=int,
        default=None,
        help="CPU the brokers are pinned to (default: first)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin brokers and load to CPUs")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority for brokers and load generator, e.g. -5 (root) so that other "
        "work on a shared machine disturbs the figures less",
    )
    parser.add_argument(
        "--amqtt-venv",
        type=Path,
        default=BENCH_DIR / ".venv-amqtt",
        help="virtualenv for amqtt (created on first use)",
    )
    parser.add_argument("--amqtt-spec", default=AMQTT_SPEC, help="pip requirement for amqtt")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every cell N times (interleaved) and report the median run and the spread",
    )
    parser.add_argument(
        "--output", type=Path, help="JSON result file (default: bench/results/bench-<time>.json)"
    )
    parser.add_argument("--keep-workdirs", action="store_true", help="keep configs and data dirs")
    parser.add_argument(
        "--no-lock",
        action="store_true",
        help="do not wait for other benchmark runs on this machine to finish first",
    )
    loadgen.add_load_options(parser)
    parser.set_defaults(workers=None)  # default: one worker per load generator CPU
    return parser.parse_args(argv)


def plan_cpus(args: argparse.Namespace) -> tuple[list[int], list[int]]:
    """(broker CPUs, load generator CPUs); empty lists mean no pinning."""
    if args.no_pin or not hasattr(os, "sched_getaffinity"):
        return [], []
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print(
            "only one CPU: brokers and load generator share it (figures are lower bounds)",
            file=sys.stderr,
        )
        return [], []
    broker = args.broker_cpu if args.broker_cpu is not None else cpus[0]
    if broker not in cpus:
        raise SystemExit(f"--broker-cpu {broker} is not one of the CPUs available: {cpus}")
    return [broker], [c for c in cpus if c != broker]


def machine_info(
    tools: Tools, families: list[str], broker_cpus: list[int], load_cpus: list[int]
) -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "broker_cpus": broker_cpus,
        "loadgen_cpus": load_cpus,
        "versions": {f: tools.version(f) for f in families},
    }


def run_cell(
    v: Variant,
    scenario: str,
    opts: loadgen.LoadOptions,
    tools: Tools,
    broker_cpus: list[int],
    log_dir: Path,
    args: argparse.Namespace,
    repeat: int = 0,
) -> dict[str, Any]:
    """One scenario against one fresh broker; never raises except on Ctrl-C."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{scenario}-{v.name}-"))
    cell: dict[str, Any] = {"variant": v.name, "scenario": scenario, "repeat": repeat}
    ctx = RunContext(workdir, opts.host, free_port(opts.host), tools, cpus=opts.cpus)
    cell["port"] = ctx.port
    try:
        with running_broker(v, ctx, broker_cpus, args.ready_timeout) as broker:
            cell["argv"] = broker.argv
            cell["ready_seconds"] = round(broker.ready_seconds, 3)
            try:
                cell["result"] = loadgen.run_scenario(
                    scenario, dataclasses.replace(opts, port=ctx.port), broker
                )
            except loadgen.ScenarioError as exc:
                cell["error"] = str(exc)
            if broker.proc.poll() is not None:
                cell["error"] = (
                    cell.get("error", "") + f" (broker exited with status {broker.proc.returncode}"
                    " during the scenario)"
                ).strip()
        assert broker.outcome is not None
        cell["broker"] = dataclasses.asdict(broker.outcome)
        suffix = f"-{repeat + 1}" if args.repeat > 1 else ""
        shutil.copy(broker.log_path, log_dir / f"{scenario}-{v.name}{suffix}.log")
    except BrokerError as exc:
        cell["error"] = str(exc)
    finally:
        if args.keep_workdirs:
            cell["workdir"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return cell


# --------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio_columns(names: list[str]) -> list[tuple[str, str]]:
    return [(n, other) for n in names for other in variant(n).ratio_to if other in names]


def representative(
    run: dict[str, Any],
) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], float]]:
    """Per (scenario, broker): the run with the median primary figure, and the spread.

    The spread is (max - min) / median of the primary figure over the successful repeats.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in run["cells"]:
        groups.setdefault((c["scenario"], c["variant"]), []).append(c)
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    spread: dict[tuple[str, str], float] = {}
    for key, cells in groups.items():
        primary = loadgen.SCENARIOS[key[0]].metrics[0].key
        ok = [c for c in cells if c.get("result", {}).get(primary) is not None]
        if not ok:
            chosen[key] = cells[0]
            continue
        ok.sort(key=lambda c: c["result"][primary])
        chosen[key] = ok[(len(ok) - 1) // 2]
        mid = chosen[key]["result"][primary]
        if len(ok) > 1 and mid:
            spread[key] = (ok[-1]["result"][primary] - ok[0]["result"][primary]) / mid
    return chosen, spread


def render(run: dict[str, Any]) -> str:
    names: list[str] = run["variants_run"]
    cells, spread = representative(run)
    ratios = _ratio_columns(names)
    load_cores = max(1, len(run["machine"]["loadgen_cpus"]) or (os.cpu_count() or 1))
    out: list[str] = []
    header = ["figure", *names, *(f"{a}/{b}" for a, b in ratios)]
    out.append("| " + " | ".join(header) + " |")
    out.append("|---|" + "---:|" * (len(header) - 1))
    bound = False
    for scenario in run["scenarios"]:
        for i, m in enumerate(loadgen.SCENARIOS[scenario].metrics):
            arrow = "higher is better" if m.higher_is_better else "lower is better"
            row = [f"{m.label} ({m.unit}, {arrow})"]
            values: dict[str, float | None] = {}
            for n in names:
                cell = cells.get((scenario, n), {})
                res = cell.get("result")
                if res is None:
                    row.append("error" if "error" in cell else "-")
                    values[n] = None
                    continue
                v = res.get(m.key)
                values[n] = v
                text = _fmt(v, m.digits)
                if i == 0 and (scenario, n) in spread:
                    text += f" ±{spread[(scenario, n)] / 2:.0%}"
                if (res.get("loadgen_cpu_pct") or 0) >= 100 * LOADGEN_BOUND * load_cores:
                    text += " ‡"
                    bound = True
                row.append(text)
            for a, b in ratios:
                va, vb = values.get(a), values.get(b)
                row.append(f"{va / vb:.2f}" if va is not None and vb else "n/a")
            out.append("| " + " | ".join(row) + " |")
    if run["options"].get("repeat", 1) > 1:
        out.append("")
        out.append(
            f"Median of {run['options']['repeat']} runs; ±x% is half the spread (max - min) "
            "of the first figure of a scenario relative to the median."
        )
    if bound:
        out.append("")
        out.append(
            "‡ the load generator used more than "
            f"{LOADGEN_BOUND:.0%} of its CPU: this figure is a lower bound for that broker."
        )
    out.append("")
    out.append(
        "CPU over the measurement window, % of one core "
        "(load generator / broker / other processes on the machine):"
    )
    out.append("")
    out.append("| scenario | " + " | ".join(names) + " |")
    out.append("|---|" + "---:|" * len(names))
    for scenario in run["scenarios"]:
        row = [scenario]
        for n in names:
            res = cells.get((scenario, n), {}).get("result")
            if res is None:
                row.append("-")
            else:
                row.append(
                    f"{_fmt(res.get('loadgen_cpu_pct'), 0)} / {_fmt(res.get('broker_cpu_pct'), 0)}"
                    f" / {_fmt(res.get('other_cpu_pct'), 0)}"
                )
        out.append("| " + " | ".join(row) + " |")
    notes = []
    for c in run["cells"]:
        where = f"{c['scenario']} / {c['variant']}"
        if run["options"].get("repeat", 1) > 1:
            where += f" (run {c['repeat'] + 1})"
        if "error" in c:
            notes.append(f"{where}: ERROR {c['error'].splitlines()[0][:400]}")
        res = c.get("result") or {}
        shown = cells.get((c["scenario"], c["variant"])) is c
        for n in res.get("notes", []):
            # machine load matters for the figure shown; the other runs' only add noise here
            if shown or not n.startswith("other processes used"):
                notes.append(f"{where}: {n}")
        b = c.get("broker") or {}
        if b.get("killed"):
            notes.append(f"{where}: broker ignored SIGTERM for 10 s and was killed")
        elif b.get("exit_code") not in (None, 0, -signal.SIGTERM):
            notes.append(f"{where}: broker exited with status {b['exit_code']} after SIGTERM")
        if b.get("log_issue_count"):
            notes.append(
                f"{where}: {b['log_issue_count']} suspicious log lines, e.g. "
                + " | ".join(b["log_issues"][:2])[:300]
            )
    if notes:
        out.append("")
        out.append("Notes:")
        out.append("")
        out.extend(f"- {n}" for n in notes)
    m = run["machine"]
    out.append("")
    out.append(f"Command: `{run['command']}`")
    out.append("")
    pin = (
        f"brokers pinned to CPU {m['broker_cpus']}, load generator to {m['loadgen_cpus']}"
        if m["broker_cpus"]
        else "no CPU pinning"
    )
    out.append(
        f"Machine: {m['cpu']}, {m['cores']} cores ({pin}), {m['platform']}, Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f"; {run['options']['duration']:g} s per scenario after {run['options']['warmup']:g} s"
        " warm-up."
    )
    for name, reason in run["skipped"].items():
        out.append(f"Skipped {name}: {reason}")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------


def _machine_lock() -> IO[str] | None:
    """Wait until no other benchmark run is going on on this machine, then hold the lock.

    Two runs at once (two engineers, or a plugin's own benchmark script using this harness)
    would pin their brokers to the same CPU and make each other's figures meaningless.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    path = Path(tempfile.gettempdir()) / "plugin-host-bench.lock"
    f = open(path, "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        print(
            f"waiting for another benchmark run on this machine to finish ({holder}; "
            f"lock {path}; --no-lock skips this)",
            file=sys.stderr,
            flush=True,
        )
        fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}: {' '.join(sys.argv)}")
    f.flush()
    return f


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for v in VARIANTS:
            print(f"broker   {v.name:24} {'default' if v.default else '       '} {v.description}")
        for n, s in loadgen.SCENARIOS.items():
            print(f"scenario {n:24} {'default' if s.default else '       '} {s.title}")
        return 0
    signal.signal(signal.SIGTERM, _sigterm)

    names = args.brokers or [v.name for v in VARIANTS if v.default]
    scenarios = args.scenarios or [n for n, s in loadgen.SCENARIOS.items() if s.default]
    known = [v.name for v in VARIANTS]
    for n in names:
        if n not in known:
            raise SystemExit(f"unknown broker {n!r}; known: {', '.join(known)}")
    for s in scenarios:
        if s not in loadgen.SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}; known: {', '.join(loadgen.SCENARIOS)}")

    broker_cpus, load_cpus = plan_cpus(args)
    if args.nice:
        # inherited by every broker, helper and load generator process started from here
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    if args.workers is None:
        args.workers = max(1, len(load_cpus))
    opts = loadgen.options_from_args(args, host=args.host, cpus=load_cpus)

    tools = Tools(args.amqtt_venv, args.amqtt_spec)
    skipped: dict[str, str] = {}
    variants: list[Variant] = []
    for n in names:
        v = variant(n)
        reason = tools.unavailable(v.family)
        if reason:
            skipped[n] = reason
            print(f"skipping {n}: {reason}", file=sys.stderr)
        else:
            variants.append(v)
    families = sorted({v.family for v in variants})

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output: Path = args.output or BENCH_DIR / "results" / f"bench-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    log_dir = output.with_name(output.stem + "-logs")
    log_dir.mkdir(exist_ok=True)
    command = "python bench/compare.py" + (
        " " + shlex.join(sys.argv[1:] if argv is None else argv)
        if (sys.argv[1:] if argv is None else argv)
        else ""
    )
    run: dict[str, Any] = {
        "command": command,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(tools, families, broker_cpus, load_cpus),
        "options": {**dataclasses.asdict(opts), "repeat": args.repeat, "nice": args.nice},
        "scenarios": scenarios,
        "variants_run": [v.name for v in variants],
        "variants": {
            v.name: {
                "family": v.family,
                "version": tools.version(v.family),
                "description": v.description,
                "config": v.config_text,
            }
            for v in variants
        },
        "skipped": skipped,
        "cells": [],
    }
    try:
        lock = None if args.no_lock else _machine_lock()
    except KeyboardInterrupt:
        return 130
    t0 = time.monotonic()
    try:
        # interleaved (repeat, scenario, broker): a slow phase of the machine hits every broker
        for repeat in range(args.repeat):
            for scenario in scenarios:
                for v in variants:
                    cell = run_cell(v, scenario, opts, tools, broker_cpus, log_dir, args, repeat)
                    run["cells"].append(cell)
                    print(_progress(cell), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(
            "interrupted: every broker and load generator process has been stopped", file=sys.stderr
        )
        run["interrupted"] = True
    finally:
        if lock is not None:
            lock.close()
    run["elapsed_s"] = round(time.monotonic() - t0, 1)
    report = render(run)
    run["report_markdown"] = report
    output.write_text(json.dumps(run, indent=2, default=str))
    print(report)
    print(f"\nresults: {output} (broker logs in {log_dir})")
    return 130 if run.get("interrupted") else 0


def _progress(cell: dict[str, Any]) -> str:
    head = f"{cell['scenario']:12} {cell['variant']:20}"
    if "result" not in cell:
        return f"{head} ERROR {cell.get('error', '')[:500]}"
    res = cell["result"]
    metric = loadgen.SCENARIOS[cell["scenario"]].metrics
    figures = ", ".join(f"{m.label} {_fmt(res.get(m.key), m.digits)} {m.unit}" for m in metric)
    tail = (
        f" (loadgen CPU {_fmt(res.get('loadgen_cpu_pct'), 0)}%, "
        f"broker CPU {_fmt(res.get('broker_cpu_pct'), 0)}%)"
    )
    err = f" ERROR {cell['error']}" if "error" in cell else ""
    return head + figures + tail + err


if __name__ == "__main__":
    sys.exit(main())
