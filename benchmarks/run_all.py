#!/usr/bin/env python3
"""Run the full benchmark matrix we publish and regenerate docs/benchmarks.md.

    python benchmarks/run_all.py                       # discover interpreters, run everything (long!)
    python benchmarks/run_all.py --python /path/python3.14 --python /path/python3.14t
    python benchmarks/run_all.py --render benchmarks/results/results.json   # docs from a saved run
    python benchmarks/run_all.py --smoke --results smoke/r.json --images smoke/img --docs smoke/b.md
                                                       # seconds: checks the pipeline, writes nothing here

Without --python it compares the interpreters ``sqlitefair bench --python
auto`` finds (uv's 3.14 and 3.14t, and those scripts/provision-python.sh
built), falling back to the one running this script.  Run it on an idle
machine: every figure is a contention measurement, and other work on the
CPUs shows up in the tails.

Writes (paths relative to the repository, changeable with options):

* ``benchmarks/results/results.json``: every run's figures and the environment;
* ``docs/img/benchmarks/*.png``: the plots (the folder's old PNGs are replaced);
* ``docs/benchmarks.md``: tables, PASS/MISS per goal, environment, plots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sqlitefair._bench import interpreters as interp_mod  # noqa: E402
from sqlitefair._bench import report  # noqa: E402
from sqlitefair._bench.plan import MICRO_DESCRIPTION, Cell, PlanOptions, build_plan, count_runs, estimate_seconds  # noqa: E402
from sqlitefair._bench.plots import plot_all  # noqa: E402
from sqlitefair._bench.runner import RunSettings, run_benchmark  # noqa: E402
from sqlitefair._bench.targets import GOALS  # noqa: E402
from sqlitefair._bench.workloads import WORKLOADS  # noqa: E402

#: The published matrix: (workloads, thread counts[, strategies]) runs, plus the cross-process run;
#: without strategies, each workload's default comparison set.
MATRIX: dict[str, Any] = {
    "runs": [
        (("write",), (1, 2, 4, 8, 16, 32)),
        (("read",), (1, 2, 4, 8, 16, 32)),
        (("mixed",), (4, 16)),
        (("insert",), (1,)),
        (("short",), (16,)),
        # The hand-off and write(fn) goals against an unfair lock and strict hand-off, and scale.
        (("write",), (16, 256), ("unfair-lock", "stdlib-immediate", "sqlitefair", "sqlitefair-strict",
                                 "sqlitefair-write", "sqlitefair-group")),
        (("short",), (256,), ("unfair-lock", "sqlitefair", "sqlitefair-strict", "sqlitefair-write", "sqlitefair-group")),
    ],
    "procs": {"processes": (2, 4, 8), "threads_per_process": 2},
    "duration": 2.0,
    "repeats": 3,
}
#: --smoke: the same shape, tiny, to check the pipeline end to end.
SMOKE: dict[str, Any] = {
    "runs": [(("write",), (1, 16)), (("read",), (1, 2)), (("insert",), (1,)), (("short",), (16,))],
    "procs": {"processes": (2,), "threads_per_process": 2},
    "duration": 0.3,
    "repeats": 1,
}

DOCS = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "img" / "benchmarks"
RESULTS = ROOT / "benchmarks" / "results" / "results.json"
#: Hand-written reading of the latest published results (why a goal is missed), placed
#: under the goal tables; kept in a file of its own so that regenerating keeps it.
DISCUSSION = ROOT / "benchmarks" / "discussion.md"


def matrix_cells(matrix: dict[str, Any]) -> list[Cell]:
    cells: list[Cell] = []
    for workloads, threads, *strategies in matrix["runs"]:  # (workloads, threads[, strategies])
        options = PlanOptions(
            workloads=workloads, threads=threads, duration=matrix["duration"], repeats=matrix["repeats"],
            strategies=strategies[0] if strategies else None,
        )
        cells.extend(c for c in build_plan(options) if c not in cells)
    procs = matrix["procs"]
    options = PlanOptions(
        workloads=("procs",),
        processes=procs["processes"],
        threads_per_process=procs["threads_per_process"],
        duration=matrix["duration"],
        repeats=matrix["repeats"],
    )
    cells.extend(build_plan(options))
    # The pool without the cross-process queue, beside it at the goal's size.
    options = PlanOptions(
        workloads=("procs",),
        processes=(max(procs["processes"]),),
        threads_per_process=procs["threads_per_process"],
        duration=matrix["duration"],
        repeats=matrix["repeats"],
        strategies=("sqlitefair-noqueue",),
    )
    cells.extend(c for c in build_plan(options) if c not in cells)
    return cells


# -- Markdown ----------------------------------------------------------------

PENDING = "_Results pending: the full matrix has not been run yet (`python benchmarks/run_all.py`)._"


def _goal_tables(result: dict[str, Any] | None) -> list[str]:
    if not result or not result.get("targets"):
        rows = ["| goal | target | result |", "| --- | --- | --- |"]
        rows += [f"| {what} | {goal} | results pending |" for what, goal in GOALS.values()]
        return rows
    out: list[str] = []
    labels = [i["label"] for i in result["interpreters"]]
    builds = {i["label"]: ("free-threaded" if i.get("free_threaded_build") else "GIL") for i in result["interpreters"]}
    for strategy in dict.fromkeys(t["strategy"] for t in result["targets"]):
        out.append(f"**{strategy}**")
        out.append("")
        out.append("| goal | target | " + " | ".join(f"Python {label} ({builds[label]})" for label in labels) + " |")
        out.append("| --- | --- | " + " | ".join("---" for _ in labels) + " |")
        for goal_id, (what, goal) in GOALS.items():
            cells = []
            for label in labels:
                t = next((t for t in result["targets"] if t["id"] == goal_id and t["interpreter"] == label and t["strategy"] == strategy), None)
                if t is None or t["status"] == "n/a":
                    cells.append("not measured")
                    continue
                status = {"PASS": "**PASS**", "MISS": "**MISS**", "info": "info"}[t["status"]]
                notes = f" ({'; '.join(t['notes'])})" if t["notes"] else ""
                cells.append(f"{status}: {t['figure']}{notes}")
            if all(c == "not measured" for c in cells):
                continue  # a goal of another strategy
            out.append(f"| {what} | {goal} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _environment(result: dict[str, Any]) -> list[str]:
    host = result["host"]
    out = [
        f"- sqlitefair {result.get('sqlitefair_version')}, run {result.get('started_at')} (took {_duration(result.get('wall_seconds', 0))})",
        f"- {host['cpus']} CPUs, {host['platform']}; load average at the start {host.get('load_average')}",
        f"- database on {host['fs_type']} ({host['db_location']})",
        f"- {result['options']['duration']:g} s per run, "
        + (f"median of {result['options']['repeats']} runs per cell" if result["options"]["repeats"] > 1 else "one run per cell"),
    ]
    for interp in result["interpreters"]:
        build = "free-threaded build" if interp.get("free_threaded_build") else "GIL build"
        gil = interp.get("gil_enabled_after_import_sqlite3")
        line = (f"- Python {interp['label']} ({interp.get('implementation')}, {build}, found by {interp.get('found_by')}): "
                f"GIL enabled after importing sqlite3: {'yes' if gil else 'no'}")
        if "gil_enabled_after_import_apsw" in interp:
            line += f", after importing apsw: {'yes' if interp['gil_enabled_after_import_apsw'] else 'no'}"
        line += f"; SQLite {interp.get('sqlite_version')}"
        if interp.get("apsw_version"):
            line += f"; apsw {interp['apsw_version']} (SQLite {interp.get('apsw_sqlite_version')})"
        out.append(line)
    for skipped in result.get("skipped", []):
        out.append(f"- skipped {skipped['strategy']} on Python {skipped['interpreter']}: {skipped['reason']}")
    for skipped in result.get("skipped_interpreters", []):
        out.append(f"- skipped interpreter {skipped['interpreter']}: {skipped['reason']}")
    return out


def render_markdown(result: dict[str, Any] | None, images: list[str], image_prefix: str) -> str:
    """docs/benchmarks.md: method, how to run it, and the results (or placeholders)."""
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by benchmarks/run_all.py; edit that script, not this file. -->",
        "",
        "sqlitefair's claim is that a FIFO-queued writer with `BEGIN IMMEDIATE` removes the "
        "\"database is locked\" errors and the multi-second latency tails that SQLite's own busy handler "
        "gives under write contention, at little cost. These benchmarks measure that claim on identical work, "
        "on your own disk if you like.",
        "",
        "## Run it yourself",
        "",
        "```sh",
        "pip install 'sqlitefair[bench]'        # matplotlib is only needed for the plots",
        "python -m sqlitefair bench             # quick comparison: write contention, 16 threads, under a minute",
        "sqlitefair bench --workload write --threads 1,2,4,8,16,32 --repeats 3 --out bench-results",
        "sqlitefair bench --workload read --threads 1,2 --python /path/to/python3.14 --python /path/to/python3.14t",
        "sqlitefair bench --workload procs --processes 2,4,8",
        "sqlitefair bench --db /mnt/disk/bench.db   # benchmark on that disk (default: a temporary file)",
        "sqlitefair bench --list                # workloads and strategies",
        "```",
        "",
        "From a source checkout, `scripts/bench` makes a virtual environment on first use and runs the same "
        "command. `python benchmarks/run_all.py` runs the whole matrix below (about "
        f"{estimate_seconds(matrix_cells(MATRIX)) / 60:.0f} minutes per interpreter) and regenerates this page; "
        "without `--python` it compares the interpreters found by `uv python find 3.14` / `3.14t` and by "
        "`scripts/provision-python.sh --print`. Run it on an idle machine.",
        "",
        "Progress goes to stderr, the table to stdout; `--out DIR` also writes `results.json` (every run's "
        "figures and the environment) and PNG plots; `--json` prints the JSON instead of the table.",
        "",
        "## What is measured",
        "",
        "Strategies, each doing exactly the same transactions on a database with sqlitefair's default pragmas "
        "(WAL, `synchronous=NORMAL`, ...):",
        "",
        "| strategy | what it is |",
        "| --- | --- |",
        "| `stdlib-deferred` | stdlib `sqlite3`, a connection per thread, `BEGIN` (deferred, as Django's `atomic()` and "
        "Python's implicit transactions do), 5 s busy timeout: what most Python code does today |",
        "| `stdlib-immediate` | the same with `BEGIN IMMEDIATE` and SQLite's own 5 s busy handler |",
        "| `ruby-1ms` | a connection per thread, `BEGIN IMMEDIATE` with busy timeout 0, retried every 1 ms until "
        "5 s (sqlite3-ruby's `busy_handler_timeout`, Rails 8) |",
        "| `unfair-lock` | one connection behind a `threading.Lock` (only for very short transactions) |",
        "| `sqlitefair` | `sqlitefair.connect(path)` with its defaults; readers = threads for read workloads |",
        "| `sqlitefair-apsw` | the same with `backend=\"apsw\"`, where apsw is installed |",
        "| `sqlitefair-strict` | `sqlitefair.connect(path, handoff=\"strict\")`: every release hands the writer to "
        "the oldest waiter (the default, bounded hand-off, lets a running thread take it while the oldest waiter is "
        "younger than 1 ms); measured where the hand-off goals need it |",
        "| `sqlitefair-write` | writes through `pool.write(fn)`: with the GIL off, the thread holding the writer runs "
        "the calls queued behind it (flat combining); with the GIL on, each call runs in its caller's thread |",
        "| `sqlitefair-group` | the same with `group_commit=True`: consecutive calls in one transaction, each in a "
        "savepoint |",
        "",
        "Workloads:",
        "",
        "| workload | what each operation does |",
        "| --- | --- |",
    ]
    lines += [f"| `{name}` | {w.description} |" for name, w in WORKLOADS.items()]
    lines += [f"| `micro` | {MICRO_DESCRIPTION} |"]
    lines += [
        "",
        "Per cell: throughput (transactions committed inside the window, per second); latency p50/p99/p99.9/max "
        "from asking for the transaction until it committed (transactions still running when the window closes "
        "finish and count, so the tail is not cut off); wait until `BEGIN` succeeded (not measurable for a "
        "deferred `BEGIN`, which waits inside its statements); errors, split into \"database is locked\", "
        "sqlitefair timeouts and others (an errored transaction is counted, not retried); fairness as Jain's "
        "index of per-thread throughput. Every cell runs in fresh processes on a freshly seeded database, "
        "threads start together on a barrier (processes on a shared start time), and the committed rows in the "
        "file are checked against the successes reported. Tables show medians of the repeated runs; the JSON "
        "keeps every run.",
        "",
        "Each result records the interpreter version, whether it is a free-threaded build, whether the GIL was "
        "on after importing the binding (an extension module without free-threading support switches it back "
        "on, and such runs are flagged **GIL RE-ENABLED**), the SQLite version, CPUs and the file system.",
        "",
        "How to read a table: a strategy that lets the thread which just committed start its next transaction "
        "at once (SQLite's busy handler sleeps waiters for up to 100 ms between tries; a `threading.Lock` wakes "
        "nobody in particular) gets high throughput by running one thread at a time, and makes the others wait: "
        "look at max latency, p99.9 and fairness beside tx/s. sqlitefair hands the writer to the oldest waiter "
        "once it has waited 1 ms (`sqlitefair-strict`: always), "
        "and each hand-off costs a thread switch.",
        "",
        "## Goals",
        "",
        "The project's goals, judged by the benchmark on the machine it ran on and never asserted in tests. The "
        "read-scaling goal is for the free-threaded build; the GIL build's figure is shown beside it. The "
        "overhead goals compare with a raw stdlib connection, so for `sqlitefair-apsw` they are shown, not judged.",
        "",
    ]
    if result is None:
        lines += [PENDING, ""]
    lines += _goal_tables(result)
    if result is not None and DISCUSSION.exists():
        lines += ["", DISCUSSION.read_text().rstrip()]
    lines += ["", "## Results", ""]
    if result is None:
        lines += [PENDING, ""]
    else:
        lines += _environment(result) + [""]
        for warning in report.gil_warnings(result):
            lines += [f"> **{warning}**", ""]
        for (label, *_), cells in report.groups(result):
            title = report.group_title(cells[0], next(i for i in result["interpreters"] if i["label"] == label))
            body = report.render_group(cells).split("\n", 1)[1]
            lines += [f"### {title}", "", "```text", body, "```", ""]
        lines += [report.LEGEND, ""]
        lines += ["## Plots", ""]
        if images:
            lines += [f"![{Path(name).stem}]({image_prefix}{Path(name).name})\n" for name in images]
        else:
            lines += ["_No plots (matplotlib missing when the results were rendered)._", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", metavar="PATH", help="interpreter to compare (repeatable; default: discover)")
    parser.add_argument("--render", metavar="JSON", help="do not run: regenerate the docs and plots from this results.json")
    parser.add_argument("--pending", action="store_true", help="do not run: write the docs page with 'results pending' placeholders")
    parser.add_argument("--smoke", action="store_true", help="a tiny matrix (seconds) to check the pipeline")
    parser.add_argument("--db", metavar="PATH", help="database file on the disk to measure (default: a temporary file)")
    parser.add_argument("--results", default=str(RESULTS), metavar="JSON", help="where to write the results")
    parser.add_argument("--docs", default=str(DOCS), metavar="MD", help="the Markdown page to write")
    parser.add_argument("--images", default=str(IMAGES), metavar="DIR", help="folder for the PNG plots")
    args = parser.parse_args(argv)

    def progress(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    if args.pending:
        with open(args.docs, "w", encoding="utf-8") as f:
            f.write(render_markdown(None, [], ""))
        progress(f"wrote {args.docs} (results pending)\n")
        return 0
    if args.render:
        with open(args.render, encoding="utf-8") as f:
            result = json.load(f)
    else:
        matrix = SMOKE if args.smoke else MATRIX
        cells = matrix_cells(matrix)
        if args.python:
            chosen = [interp_mod.Interpreter(p) for p in args.python]
        else:
            chosen = interp_mod.discover(log=lambda text: progress(text + "\n"))
            if not chosen:
                progress("no interpreters discovered: using this one (no GIL vs free-threaded comparison)\n")
                chosen = [interp_mod.current()]
        progress(f"{len(cells)} cells x {matrix['repeats']} runs each x {len(chosen)} interpreters = "
                 f"{count_runs(cells, len(chosen))} runs, about {estimate_seconds(cells, len(chosen)) / 60:.0f} min\n")
        try:
            load = os.getloadavg()[0]
            if load > 0.5:
                progress(f"warning: load average {load:.2f}; an idle machine gives steadier figures\n")
        except OSError:
            pass
        options = {
            "matrix": "smoke" if args.smoke else "full",
            "duration": matrix["duration"],
            "repeats": matrix["repeats"],
            "interpreters": [os.path.basename(i.path) for i in chosen],
        }
        started = time.perf_counter()
        result = run_benchmark(cells, chosen, RunSettings(db_path=args.db, progress=progress), options)
        progress(f"matrix done in {(time.perf_counter() - started) / 60:.1f} min\n")
        os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
        report.write_json(result, args.results)
        progress(f"wrote {args.results}\n")
        if not any(i.get("free_threaded_build") for i in result["interpreters"]):
            progress("note: no free-threaded interpreter ran; pass --python /path/to/python3.14t for the read-scaling goal\n")

    os.makedirs(args.images, exist_ok=True)
    for old in Path(args.images).glob("*.png"):
        old.unlink()
    images, message = plot_all(result, args.images)
    if message:
        progress(message + "\n")
    prefix = os.path.relpath(args.images, os.path.dirname(os.path.abspath(args.docs))).replace(os.sep, "/") + "/"
    with open(args.docs, "w", encoding="utf-8") as f:
        f.write(render_markdown(result, images, prefix))
    progress(f"wrote {args.docs} and {len(images)} plots in {args.images}\n")
    print(report.render(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
