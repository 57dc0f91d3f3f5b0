"""The ``bench`` command line: options, validation, and what runs when.

``sqlitefair bench`` with no options is the quick comparison: write
contention at 16 threads, every write strategy, 3 s each, well under a
minute.  Everything heavier is opt-in.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
import time
from typing import Any, Callable, Sequence

__all__ = ("add_subparser", "run")

MAX_THREADS = 512
MAX_PROCESSES = 64


def _int_list(what: str, limit: int) -> Callable[[str], tuple[int, ...]]:
    def parse(text: str) -> tuple[int, ...]:
        values = []
        for part in text.split(","):
            part = part.strip()
            try:
                value = int(part)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{what} {part!r} is not a whole number (use e.g. 1,2,4,8,16,32)") from None
            if not 1 <= value <= limit:
                raise argparse.ArgumentTypeError(f"{what} must be between 1 and {limit}, got {value}")
            if value not in values:
                values.append(value)
        return tuple(values)

    return parse


def _names(what: str, choices: Callable[[], Sequence[str]]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        out = []
        known = list(choices())
        for name in (p.strip() for p in text.split(",")):
            if name not in known:
                raise argparse.ArgumentTypeError(f"unknown {what} {name!r}; choose from: {', '.join(known)}")
            if name not in out:
                out.append(name)
        return tuple(out)

    return parse


def _positive_float(what: str, low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not a number of seconds") from None
        if not low <= value <= high:  # also rejects NaN
            raise argparse.ArgumentTypeError(f"{what} must be between {low:g} and {high:g} seconds, got {text}")
        return value

    return parse


def _positive_int(what: str, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not a whole number") from None
        if not 1 <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between 1 and {high}, got {value}")
        return value

    return parse


def _workload_choices() -> Sequence[str]:
    from .plan import WORKLOAD_CHOICES

    return WORKLOAD_CHOICES


def _strategy_choices() -> Sequence[str]:
    from .strategies import STRATEGIES

    return list(STRATEGIES)


def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on the ``sqlitefair`` command's subparsers."""
    from .plan import MICRO_DESCRIPTION
    from .workloads import WORKLOADS

    description = (
        "Compare sqlitefair with plain sqlite3 usage on identical work. With no options: write contention "
        "at 16 threads for every write strategy, 3 s each (well under a minute). Progress goes to stderr, "
        "the table to stdout."
    )
    # One line per workload, from the Workload objects themselves, so that the help says what runs.
    workloads = [f"  {name:<8} {w.description}" for name, w in WORKLOADS.items()]
    workloads.append(f"  {'micro':<8} {MICRO_DESCRIPTION}")
    epilog = "\n".join(
        [
            "workloads (--workload):",
            *workloads,
            "",
            "examples:",
            "  sqlitefair bench --workload write --threads 1,2,4,8,16,32 --repeats 3 --out results",
            "  sqlitefair bench --workload read --threads 1,2 --python auto",
        ]
    )
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="measure write contention, read scaling and fairness on your disk",
        description=textwrap.fill(description, width=min(shutil.get_terminal_size().columns, 100) - 2),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workload", "-w", type=_names("workload", _workload_choices), action="append", metavar="NAME[,NAME]",
                   help=f"workload(s), comma-separated or repeated: {', '.join(WORKLOADS)}, or micro (the overhead "
                   "goals' cells); each is described below (default: write)")
    p.add_argument("--threads", "-t", type=_int_list("thread count", MAX_THREADS), action="append", metavar="N[,N]",
                   help="thread counts per process, e.g. 1,2,4,8,16,32 (default: 16; insert: 1)")
    p.add_argument("--processes", "-p", type=_int_list("process count", MAX_PROCESSES), action="append", metavar="N[,N]",
                   help="process counts for the procs workload (default: 8)")
    p.add_argument("--threads-per-process", type=_positive_int("threads per process", MAX_THREADS), default=2, metavar="N",
                   help="threads in each process of the procs workload (default: 2)")
    p.add_argument("--duration", "-d", type=_positive_float("duration", 0.05, 3600), default=3.0, metavar="SECONDS",
                   help="seconds each run measures (default: 3)")
    p.add_argument("--repeats", "-r", type=_positive_int("repeats", 100), default=1, metavar="N",
                   help="runs per cell; tables show medians, the JSON keeps every run (default: 1)")
    p.add_argument("--strategies", "-s", type=_names("strategy", _strategy_choices), action="append", metavar="NAME[,NAME]",
                   help="strategies, comma-separated (default: each workload's comparison set)")
    p.add_argument("--python", action="append", metavar="PATH",
                   help="run the cells in this interpreter (repeatable); 'auto' finds 3.14 and 3.14t with uv "
                   "and the interpreters scripts/provision-python.sh built (default: this interpreter)")
    p.add_argument("--db", metavar="PATH",
                   help="database file to benchmark on, to choose the disk (default: a temporary file, removed "
                   "afterwards); it is recreated for every run, so it must be new or one this benchmark made")
    p.add_argument("--out", "-o", metavar="DIR", help="write results.json and PNG plots into DIR (e.g. bench-results)")
    p.add_argument("--no-plots", action="store_true", help="with --out: write the JSON only")
    p.add_argument("--json", action="store_true", help="print the JSON result on stdout instead of the table")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.add_argument("--list", action="store_true", help="list workloads and strategies, then exit")
    p.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: one benchmark process
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # internal: describe this interpreter
    p.set_defaults(handler=run, bench_parser=p)
    return p


def _flatten(values: list[tuple[Any, ...]] | None, default: tuple[Any, ...]) -> tuple[Any, ...]:
    if not values:
        return default
    out: list[Any] = []
    for group in values:
        out.extend(v for v in group if v not in out)
    return tuple(out)


def _check_paths(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Errors a user can fix, reported before anything runs (exit code 2)."""
    for path in args.python or []:
        if path == "auto":
            continue
        if not os.path.exists(path):
            parser.error(f"argument --python: {path!r} does not exist")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            parser.error(f"argument --python: {path!r} is not an executable file")
    if args.db is not None:
        from .workloads import is_benchmark_database

        folder = os.path.dirname(os.path.abspath(args.db))
        if not os.path.isdir(folder):
            parser.error(f"argument --db: the folder {folder!r} does not exist")
        if not os.access(folder, os.W_OK):
            parser.error(f"argument --db: the folder {folder!r} is not writable (SQLite needs -wal and -shm files there)")
        if os.path.isdir(args.db):
            parser.error(f"argument --db: {args.db!r} is a folder; give a file path such as {os.path.join(args.db, 'bench.db')!r}")
        if os.path.exists(args.db) and not is_benchmark_database(args.db):
            parser.error(f"argument --db: {args.db!r} exists and was not made by this benchmark; refusing to overwrite it")
    if args.out is not None and os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"argument --out: {args.out!r} exists and is not a folder")


def _list() -> int:
    from .plan import MICRO_DESCRIPTION, default_strategies
    from .strategies import STRATEGIES
    from .workloads import WORKLOADS

    print("workloads:")
    for name, w in WORKLOADS.items():
        print(f"  {name:<8} {w.description}; compares {', '.join(default_strategies(name))}")
    print(f"  {'micro':<8} {MICRO_DESCRIPTION}; each compares its workload's strategies")
    print("strategies:")
    for name, s in STRATEGIES.items():
        reason = s.unavailable()
        print(f"  {name:<17} {s.description}" + (f" [unavailable: {reason}]" if reason else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    """Handle ``sqlitefair bench``."""
    if args.worker:
        from .runner import member_main

        return member_main()
    if args.probe:
        import json

        from .interpreters import PROTOCOL_PREFIX, probe_here

        print(PROTOCOL_PREFIX + json.dumps(probe_here()), flush=True)
        return 0
    if args.list:
        return _list()
    parser: argparse.ArgumentParser = args.bench_parser
    _check_paths(args, parser)

    from . import interpreters as interp_mod
    from .plan import PlanOptions, build_plan, count_runs, estimate_seconds, plan_notes
    from .report import render, write_json
    from .runner import RunSettings, run_benchmark

    def progress(text: str) -> None:
        if not args.quiet:
            sys.stderr.write(text)
            sys.stderr.flush()

    options = PlanOptions(
        workloads=_flatten(args.workload, ("write",)),
        threads=_flatten(args.threads, ()) or None,
        processes=_flatten(args.processes, (8,)),
        threads_per_process=args.threads_per_process,
        duration=args.duration,
        repeats=args.repeats,
        strategies=_flatten(args.strategies, ()) or None,
    )
    cells = build_plan(options)
    for note in plan_notes(options):
        progress(note + "\n")
    chosen: list[interp_mod.Interpreter] = []
    for path in args.python or []:
        if path == "auto":
            found = interp_mod.discover(log=lambda text: progress(f"{text}\n"))
            if not found:
                progress("--python auto found no interpreter\n")
            chosen.extend(found)
        else:
            chosen.append(interp_mod.Interpreter(path))
    if not chosen:
        if args.python:
            progress("using this interpreter instead\n")
        chosen = [interp_mod.current()]
    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    # The same total as the progress counter [k/total]: cells x repeats x interpreters.
    progress(
        f"sqlitefair bench: {plural(len(cells), 'cell')} x {plural(options.repeats, 'run')} each x "
        f"{plural(len(chosen), 'interpreter')} = {plural(count_runs(cells, len(chosen)), 'run')}, about "
        f"{estimate_seconds(cells, len(chosen)):.0f} s\n"
    )
    settings = RunSettings(db_path=args.db, progress=progress, seed=args.seed)
    record = {
        "workloads": list(options.workloads),
        "threads": list(options.threads) if options.threads else None,
        "processes": list(options.processes),
        "threads_per_process": options.threads_per_process,
        "duration": options.duration,
        "repeats": options.repeats,
        "strategies": list(options.strategies) if options.strategies else None,
        "interpreters": [os.path.basename(i.path) for i in chosen],
    }
    started = time.perf_counter()
    try:
        result = run_benchmark(cells, chosen, settings, record)
    except KeyboardInterrupt:
        progress("\ninterrupted; temporary files removed\n")
        return 130
    if not result["interpreters"]:
        progress("no interpreter could run the benchmark\n")
        return 1
    if args.json:
        import json

        print(json.dumps(result, indent=1), flush=True)
    else:
        print(render(result), end="", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "results.json")
        write_json(result, path)
        progress(f"wrote {path}\n")
        if not args.no_plots:
            from .plots import plot_all

            written, message = plot_all(result, args.out)
            for name in written:
                progress(f"wrote {name}\n")
            if message:
                progress(message + "\n")
    elif not args.json:
        progress("(add --out DIR to keep the JSON with every figure, and PNG plots)\n")
    progress(f"done in {time.perf_counter() - started:.1f} s\n")
    failed = any(c["harness_errors"] or not c["consistent"] for c in result["cells"])
    return 1 if failed else 0
