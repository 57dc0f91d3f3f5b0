"""Running cells: worker processes started together, worker threads started on a barrier.

Parent side (:func:`run_benchmark`): for every interpreter and cell, seed a
fresh database, start one child process per benchmark process (``python -m
sqlitefair bench --worker``), wait until every child has opened its
connections, hand all of them the same start time, collect their raw
samples, count the committed rows in the file, and compute the metrics.

Child side (:func:`member_main`): open the strategy's connections, report
ready, sleep until the start time, release ``threads`` worker threads at
once through a :class:`threading.Barrier`, let each run transactions in a
closed loop until the window ends, and send every latency back.

Every wait is bounded: setting up, the window itself, and stragglers
(at most the strategies' 5 s timeout past the window).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from array import array
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable

from . import environment, metrics
from .interpreters import PROTOCOL_PREFIX, Interpreter, child_environment, make_label, probe
from .plan import Cell, count_runs
from .strategies import TIMEOUT, StrategyConfig, classify_error, get_strategy
from .workloads import committed_count, create_database, get_workload

__all__ = ("member_main", "drive", "run_benchmark", "RunSettings")

perf_counter = time.perf_counter

#: Seconds a child may take to start and open its connections.
SETUP_TIMEOUT = 60.0
#: Seconds past the window (and the strategies' timeout) before a child is declared stuck.
STRAGGLER_GRACE = 20.0
KINDS = ("write", "read")
ERROR_KINDS = ("locked", "timeout", "other")


# -- child side -------------------------------------------------------------


class _ThreadRecord:
    """What one worker thread saw; merged after the window, never shared while running."""

    def __init__(self) -> None:
        self.latency = {k: array("d") for k in KINDS}
        self.wait = {k: array("d") for k in KINDS}
        self.ok = {k: 0 for k in KINDS}
        self.ok_in_window = {k: 0 for k in KINDS}
        self.errors = {k: {e: 0 for e in ERROR_KINDS} for k in KINDS}
        self.error_latency_max = {k: 0.0 for k in KINDS}
        self.messages: dict[str, int] = {}
        self.fatal: str | None = None
        self.finished = 0.0


class _Clock:
    end = 0.0


def _encode(values: array[float]) -> str:
    return base64.b64encode(values.tobytes()).decode("ascii")


def decode_samples(text: str | None) -> array[float]:
    """The inverse of the child's encoding of a sample array (native doubles)."""
    out = array("d")
    if text:
        out.frombytes(base64.b64decode(text))
    return out


def drive(
    instance: Any,
    workload: Any,
    threads: int,
    *,
    duration: float,
    start_at: float | None = None,
    first_worker: int = 0,
    seed: int = 1,
) -> dict[str, Any]:
    """Run ``workload`` on ``instance`` with ``threads`` threads for ``duration`` seconds.

    Threads wait on a barrier; the main thread sleeps until ``start_at``
    (``time.time()``, shared across processes) and then releases them all.
    A transaction that begins before the window ends is allowed to finish
    (its latency counts: cutting it would hide the tail) but only those
    finished inside the window count towards throughput.
    """
    records = [_ThreadRecord() for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)
    # Every worker leaves its loop before any thread exits: on a free-threaded build threads
    # tearing down slowed the transactions still in flight beside them (3.13t, 256 threads:
    # slowest wait 74 ms with threads exiting as they stopped, 27 ms held until all stopped).
    stopped = threading.Barrier(threads)
    clock = _Clock()
    share = workload.write_share

    def work(index: int) -> None:
        rec = records[index]
        worker = first_worker + index
        try:
            barrier.wait(timeout=SETUP_TIMEOUT)
            end = clock.end
            rng = random.Random(seed * 1_000_003 + worker)
            write, read = instance.write, instance.read
            write_body, read_body = workload.write_body, workload.read_body
            while True:
                t0 = perf_counter()
                if t0 >= end:
                    break
                kind = "write" if share >= 1.0 or (share > 0.0 and rng.random() < share) else "read"
                try:
                    if kind == "write":
                        waited = write(index, write_body, rng, worker)
                    else:
                        waited = read(index, read_body, rng, worker)
                except Exception as exc:  # counted, not retried
                    took = perf_counter() - t0
                    rec.errors[kind][classify_error(exc)] += 1
                    if took > rec.error_latency_max[kind]:
                        rec.error_latency_max[kind] = took
                    message = f"{type(exc).__name__}: {exc}"[:200]
                    if message in rec.messages or len(rec.messages) < 8:
                        rec.messages[message] = rec.messages.get(message, 0) + 1
                    continue
                t1 = perf_counter()
                rec.latency[kind].append(t1 - t0)
                if waited is not None:
                    rec.wait[kind].append(waited)
                rec.ok[kind] += 1
                if t1 <= end:
                    rec.ok_in_window[kind] += 1
        except BaseException:
            rec.fatal = traceback.format_exc()
        finally:
            rec.finished = perf_counter()
            try:  # (bounded: a worker stuck in a transaction is reported as stuck, not waited for)
                stopped.wait(timeout=TIMEOUT)
            except threading.BrokenBarrierError:
                pass

    workers = [threading.Thread(target=work, args=(i,), name=f"bench-{first_worker + i}", daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    if start_at is not None:
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(min(delay, SETUP_TIMEOUT))
    start = perf_counter()
    clock.end = start + duration
    barrier.wait(timeout=SETUP_TIMEOUT)
    limit = clock.end + TIMEOUT + STRAGGLER_GRACE
    for t in workers:
        t.join(max(0.0, limit - perf_counter()))
    stuck = [t.name for t in workers if t.is_alive()]

    kinds: dict[str, Any] = {}
    for kind in KINDS:
        latency, wait = array("d"), array("d")
        for rec in records:
            latency.extend(rec.latency[kind])
            wait.extend(rec.wait[kind])
        per_worker = [rec.ok[kind] for rec in records]
        errors = {e: sum(rec.errors[kind][e] for rec in records) for e in ERROR_KINDS}
        if not any(per_worker) and not any(errors.values()):
            continue
        kinds[kind] = {
            "latency": _encode(latency),
            "wait": _encode(wait) if instance.measures_wait else None,
            "ok": sum(per_worker),
            "ok_in_window": sum(rec.ok_in_window[kind] for rec in records),
            "errors": errors,
            "error_latency_max": max(rec.error_latency_max[kind] for rec in records),
            "per_worker_ok": per_worker,
        }
    messages: dict[str, int] = {}
    for rec in records:
        for text, n in rec.messages.items():
            messages[text] = messages.get(text, 0) + n
    return {
        "elapsed": max((rec.finished for rec in records), default=start) - start,
        "kinds": kinds,
        "error_messages": messages,
        "fatal": [rec.fatal for rec in records if rec.fatal] + [f"thread {n} still running" for n in stuck],
        "stuck": bool(stuck),
    }


def _member(spec: dict[str, Any], send: Callable[[dict[str, Any]], None], receive: Callable[[], Any]) -> dict[str, Any]:
    strategy = get_strategy(spec["strategy"])
    workload = get_workload(spec["workload"])
    gil_after, import_error = environment.gil_after_import(strategy.backend_module)
    if import_error:
        return {"error": f"cannot import {strategy.backend_module}: {import_error}"}
    reason = strategy.unavailable()
    if reason:
        return {"error": f"strategy {strategy.name} is unavailable: {reason}"}
    config = StrategyConfig(spec["path"], spec["threads"], spec.get("readers"), spec.get("timeout", TIMEOUT))
    instance = strategy.make(config)
    try:
        instance.warm_up()
        send({"ready": True})
        go = receive()
        if not isinstance(go, dict) or "start_at" not in go:
            return {"error": "aborted by the parent before the start"}
        result = drive(
            instance,
            workload,
            spec["threads"],
            duration=spec["duration"],
            start_at=go["start_at"],
            first_worker=spec["process_index"] * spec["threads"],
            seed=spec.get("seed", 1),
        )
    finally:
        instance.close()
    facts = environment.interpreter_facts()
    facts["gil_enabled_after_import"] = gil_after
    facts["gil_enabled_at_end"] = environment.gil_enabled()
    facts["backend_sqlite_version"] = _binding_sqlite_version(strategy.backend_module)
    result["env"] = facts
    return result


def _binding_sqlite_version(module: str) -> str | None:
    if module == "apsw":
        try:
            import apsw

            return str(apsw.sqlite_lib_version())
        except Exception:
            return None
    import sqlite3

    return sqlite3.sqlite_version


def member_main(stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    """Entry point of ``python -m sqlitefair bench --worker``: one benchmark process.

    Reads a JSON spec line from stdin; protocol lines on stdout start with
    :data:`PROTOCOL_PREFIX`.  Anything else printed goes to stderr.
    """
    stdin = stdin or sys.stdin
    proto = stdout or sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol

    def send(obj: dict[str, Any]) -> None:
        proto.write(PROTOCOL_PREFIX + json.dumps(obj) + "\n")
        proto.flush()

    def receive() -> Any:
        line = stdin.readline()
        return json.loads(line) if line.strip() else None

    try:
        spec = receive()
        if not isinstance(spec, dict):
            send({"error": "no spec on stdin"})
            return 2
        send(_member(spec, send, receive))
        return 0
    except BaseException:
        send({"error": traceback.format_exc()})
        return 1


# -- parent side ------------------------------------------------------------


class _Child:
    """One ``--worker`` process and a thread reading its protocol lines."""

    def __init__(self, python: str, env: dict[str, str], spec: dict[str, Any]) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        self.proc = subprocess.Popen(
            [python, "-m", "sqlitefair", "bench", "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self.messages: queue.Queue[Any] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.send(spec)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL_PREFIX):
                try:
                    self.messages.put(json.loads(line[len(PROTOCOL_PREFIX) :]))
                except ValueError:
                    self.messages.put({"error": f"garbled message: {line[:200]!r}"})
        self.messages.put(None)  # end of output

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died; receive() reports why

    def receive(self, deadline: float) -> dict[str, Any]:
        try:
            message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return {"error": "timed out waiting for the benchmark process"}
        if message is None:
            self.proc.wait(timeout=10)
            return {"error": f"benchmark process exited ({self.proc.returncode}): {self.stderr_tail()}"}
        return dict(message)

    def stderr_tail(self, lines: int = 6) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        text = self.stderr.read().strip().splitlines()
        return " | ".join(text[-lines:]) or "no output"

    def close(self) -> None:
        """Let the child exit (closing its stdin ends it), kill it if it will not, release the pipes."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.stderr.close()


@dataclass
class RunSettings:
    """Where and how a run happens (from the command line)."""

    db_path: str | None = None  # None: a temporary file
    progress: Callable[[str], None] | None = None
    seed: int = 1
    workdir: str | None = None  # set while running
    env: dict[str, str] = field(default_factory=dict)


def _kind_metrics(data: dict[str, Any], duration: float) -> tuple[dict[str, Any], array[float]]:
    latency = decode_samples(data["latency"])
    wait = decode_samples(data.get("wait")) if data.get("wait") is not None else None
    errors = data["errors"]
    per_worker = data["per_worker_ok"]
    out = {
        "ok": data["ok"],
        "ok_in_window": data["ok_in_window"],
        "throughput": data["ok_in_window"] / duration if duration > 0 else 0.0,
        "errors": sum(errors.values()),
        "errors_locked": errors["locked"],
        "errors_timeout": errors["timeout"],
        "errors_other": errors["other"],
        "error_latency_max": data["error_latency_max"],
        "latency": metrics.summarize(latency),
        "wait": metrics.summarize(wait) if wait is not None else None,
        "jain": metrics.jain_index(per_worker),
        "per_worker_ok": per_worker,
    }
    return out, latency


def _merge_members(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One process's view per member -> the cell's view (samples concatenated, counts added)."""
    kinds: dict[str, Any] = {}
    for result in results:
        for kind, data in result["kinds"].items():
            into = kinds.setdefault(
                kind,
                {"latency": array("d"), "wait": array("d") if data.get("wait") is not None else None, "ok": 0,
                 "ok_in_window": 0, "errors": {e: 0 for e in ERROR_KINDS}, "error_latency_max": 0.0, "per_worker_ok": []},
            )
            into["latency"].extend(decode_samples(data["latency"]))
            if into["wait"] is not None and data.get("wait") is not None:
                into["wait"].extend(decode_samples(data["wait"]))
            into["ok"] += data["ok"]
            into["ok_in_window"] += data["ok_in_window"]
            for e in ERROR_KINDS:
                into["errors"][e] += data["errors"][e]
            into["error_latency_max"] = max(into["error_latency_max"], data["error_latency_max"])
            into["per_worker_ok"].extend(data["per_worker_ok"])
    for data in kinds.values():
        data["latency"] = _encode(data["latency"])
        data["wait"] = _encode(data["wait"]) if data["wait"] is not None else None
    return kinds


def _fail(record: dict[str, Any], error: str) -> None:
    """Note a failed run: the last line for tables and progress, the whole text for the JSON."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or ["unknown error"]
    record["harness_error"] = lines[-1].strip()[:300]
    if len(lines) > 1:
        record["harness_traceback"] = "\n".join(lines)[-4000:]


def run_repeat(interp: Interpreter, cell: Cell, repeat: int, settings: RunSettings, db_path: str) -> tuple[dict[str, Any], dict[str, array[float]]]:
    """Run one repeat of ``cell`` on a fresh database; return its metrics and raw latencies."""
    workload = get_workload(cell.workload)
    create_database(db_path)
    spec = {
        "strategy": cell.strategy,
        "workload": cell.workload,
        "path": db_path,
        "threads": cell.threads,
        "readers": cell.threads if workload.readers_follow_threads else None,
        "duration": cell.duration,
        "seed": settings.seed * 1000 + repeat,
        "timeout": TIMEOUT,
    }
    children: list[_Child] = []
    record: dict[str, Any] = {"repeat": repeat + 1}
    try:
        for index in range(cell.processes):
            children.append(_Child(interp.path, settings.env, {**spec, "process_index": index}))
        deadline = time.monotonic() + SETUP_TIMEOUT
        for child in children:
            message = child.receive(deadline)
            if not message.get("ready"):
                _fail(record, message.get("error", "did not get ready"))
                return record, {}
        start_at = time.time() + 0.05 + 0.01 * cell.processes
        for child in children:
            child.send({"start_at": start_at})
        deadline = time.monotonic() + (start_at - time.time()) + cell.duration + TIMEOUT + STRAGGLER_GRACE + 10
        results = []
        for child in children:
            message = child.receive(deadline)
            if "error" in message:
                _fail(record, message["error"])
                return record, {}
            results.append(message)
    finally:
        for child in children:
            child.close()
    merged = _merge_members(results)
    raw: dict[str, array[float]] = {}
    record["kinds"] = {}
    for kind, data in merged.items():
        record["kinds"][kind], raw[kind] = _kind_metrics(data, cell.duration)
    record["elapsed"] = max(r["elapsed"] for r in results)
    record["overrun"] = max(0.0, record["elapsed"] - cell.duration)
    written = merged.get("write", {}).get("ok", 0)
    record["committed"] = committed_count(db_path, workload) if workload.write_share > 0 else 0
    record["expected_committed"] = written
    record["consistent"] = record["committed"] == written
    envs = [r["env"] for r in results]
    record["gil_enabled_after_import"] = any(e["gil_enabled_after_import"] for e in envs)
    record["gil_enabled_at_end"] = any(e["gil_enabled_at_end"] for e in envs)
    record["backend_sqlite_version"] = envs[0].get("backend_sqlite_version")
    messages: dict[str, int] = {}
    for r in results:
        for text, n in r["error_messages"].items():
            messages[text] = messages.get(text, 0) + n
    record["error_messages"] = dict(sorted(messages.items(), key=lambda kv: -kv[1])[:5])
    fatal = [f for r in results for f in r["fatal"]]
    if fatal:
        _fail(record, fatal[0])
    return record, raw


def _progress_text(record: dict[str, Any], kind: str) -> str:
    if "harness_error" in record and "kinds" not in record:
        return f"FAILED: {record['harness_error']}"
    data = record["kinds"].get(kind) or next(iter(record["kinds"].values()), None)
    if data is None:
        return "no transactions"
    from .report import fmt_count, fmt_seconds

    return (
        f"{record['elapsed']:.1f} s, {fmt_count(data['ok'])} ok, {fmt_count(data['errors'])} errors, "
        f"max {fmt_seconds(data['latency']['max'])}"
    )


def _cell_record(interp: Interpreter, cell: Cell, repeats: list[dict[str, Any]], pooled: dict[str, array[float]]) -> dict[str, Any]:
    """Every repeat of one cell, with medians, a latency tail curve and the GIL flag."""
    good = [r for r in repeats if "kinds" in r]
    kinds = sorted({k for r in good for k in r["kinds"]}, key=KINDS.index)
    median = {k: metrics.median_of([r["kinds"][k] for r in good if k in r["kinds"]]) for k in kinds}
    record: dict[str, Any] = {
        "interpreter": interp.label,
        **cell.to_json(),
        "kinds": kinds,
        "median": median,
        "runs": repeats,
        "ccdf": {k: metrics.ccdf_points(pooled[k]) for k in kinds if k in pooled},
        "consistent": all(r.get("consistent", False) for r in good) and bool(good),
        "harness_errors": [r["harness_error"] for r in repeats if "harness_error" in r],
        "free_threaded_build": interp.free_threaded,
        "gil_enabled_after_import": any(r.get("gil_enabled_after_import") for r in good),
        "gil_enabled_at_end": any(r.get("gil_enabled_at_end") for r in good),
    }
    record["gil_reenabled"] = environment.gil_reenabled(record)
    return record


def _schedule(cells: list[tuple[Interpreter, Cell]]) -> list[tuple[Interpreter, Cell, int]]:
    """The order of runs: within a group, repeat 1 of every strategy, then repeat 2...

    Interleaving keeps a slow drift in machine load (another job starting)
    from landing on one strategy's runs only.
    """
    groups: dict[tuple[str, tuple[str, int, int]], list[tuple[Interpreter, Cell]]] = {}
    for interp, cell in cells:
        groups.setdefault((interp.path + "\0" + interp.label, cell.group), []).append((interp, cell))
    out: list[tuple[Interpreter, Cell, int]] = []
    for members in groups.values():
        for repeat in range(max(c.repeats for _, c in members)):
            out.extend((i, c, repeat) for i, c in members if repeat < c.repeats)
    return out


def run_cells(cells: list[tuple[Interpreter, Cell]], settings: RunSettings, db_path: str) -> list[dict[str, Any]]:
    """Run every repeat of every (interpreter, cell), interleaved; return the cell records in order."""
    say = settings.progress or (lambda text: None)
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in range(len(cells))}
    pooled: dict[int, dict[str, array[float]]] = {n: {} for n in range(len(cells))}
    index = {(id(i), c): n for n, (i, c) in enumerate(cells)}
    schedule = _schedule(cells)
    width = len(str(len(schedule)))
    for step, (interp, cell, repeat) in enumerate(schedule, 1):
        n = index[(id(interp), cell)]
        where = f"{cell.threads} thread{'s' if cell.threads > 1 else ''}"
        where += f" x {cell.processes} processes" if cell.processes > 1 else ""
        which = f", run {repeat + 1}/{cell.repeats}" if cell.repeats > 1 else ""
        say(f"[{step:>{width}}/{len(schedule)}] {interp.label} {cell.workload}, {where}, {cell.strategy}{which} ... ")
        record, raw = run_repeat(interp, cell, repeat, settings, db_path)
        say(_progress_text(record, get_workload(cell.workload).primary_kind) + "\n")
        runs[n].append(record)
        for kind, values in raw.items():
            pooled[n].setdefault(kind, array("d")).extend(values)
    return [_cell_record(i, c, runs[n], pooled[n]) for n, (i, c) in enumerate(cells)]


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def prepare_interpreters(paths: Iterable[Interpreter], settings: RunSettings) -> tuple[list[Interpreter], list[dict[str, str]]]:
    """Probe each interpreter; return the usable ones (labelled) and the skipped ones with reasons."""
    say = settings.progress or (lambda text: None)
    usable: list[Interpreter] = []
    skipped: list[dict[str, str]] = []
    labels: set[str] = set()
    for interp in paths:
        error = probe(interp, settings.env)
        if error:
            say(f"skipping interpreter: {error}\n")
            skipped.append({"interpreter": os.path.basename(interp.path), "reason": error})
            continue
        interp.label = make_label(interp.facts, labels)
        usable.append(interp)
    return usable, skipped


def run_benchmark(cells: list[Cell], interpreters: list[Interpreter], settings: RunSettings, options: dict[str, Any]) -> dict[str, Any]:
    """Run ``cells`` in each interpreter; return the whole JSON-ready result.

    The database lives in a temporary folder (removed afterwards) unless
    ``settings.db_path`` names one; nothing else on disk is touched.
    """
    say = settings.progress or (lambda text: None)
    started, wall = _utc_now(), perf_counter()
    workdir = tempfile.mkdtemp(prefix="sqlitefair-bench-")
    try:
        settings.workdir = workdir
        settings.env = child_environment(shim_dir=workdir)
        db_path = settings.db_path or os.path.join(workdir, "bench.db")
        usable, skipped = prepare_interpreters(interpreters, settings)
        result: dict[str, Any] = {
            "schema": 1,
            "tool": "sqlitefair bench",
            "started_at": started,
            "options": options,
            "host": {
                **environment.host_facts(os.path.dirname(os.path.abspath(db_path))),
                "db_location": "temporary folder" if settings.db_path is None else "given with --db",
            },
            "interpreters": [i.to_json() for i in usable],
            "skipped_interpreters": skipped,
            "skipped": [],
            "cells": [],
        }
        try:
            import sqlitefair

            result["sqlitefair_version"] = sqlitefair.__version__
        except Exception:  # pragma: no cover
            result["sqlitefair_version"] = None
        todo = [(i, c) for i in usable for c in cells]
        runnable = [(i, c) for i, c in todo if i.strategies.get(c.strategy, "unknown") is None]
        noted: set[tuple[str, str]] = set()
        for interp, cell in todo:
            reason = interp.strategies.get(cell.strategy, f"unknown strategy {cell.strategy!r}")
            if reason is not None and (interp.label, cell.strategy) not in noted:
                noted.add((interp.label, cell.strategy))
                say(f"skipping {cell.strategy} on {interp.label}: {reason}\n")
                result["skipped"].append({"interpreter": interp.label, "strategy": cell.strategy, "reason": reason})
        planned = count_runs(cells, len(interpreters))
        runs = sum(c.repeats for _, c in runnable)
        if runs != planned:
            say(f"running {runs} of the {planned} runs planned (the others are skipped, as said above)\n")
        result["cells"] = run_cells(runnable, settings, db_path)
        result["finished_at"] = _utc_now()
        result["wall_seconds"] = round(perf_counter() - wall, 2)
        from .targets import evaluate

        result["targets"] = evaluate(result)
        return result
    finally:
        # The temporary folder holds the default database and the import shim; a --db file stays.
        shutil.rmtree(workdir, ignore_errors=True)
