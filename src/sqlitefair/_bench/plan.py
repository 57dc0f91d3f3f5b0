"""Which cells a run measures: workload x strategy x threads (x processes).

A *cell* is one strategy doing one workload at one concurrency; it is run
``repeats`` times on a fresh database each time.  A *group* is the cells
that differ only in strategy: one table in the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .strategies import STRATEGIES
from .workloads import WORKLOADS

__all__ = ("Cell", "PlanOptions", "build_plan", "default_strategies", "WORKLOAD_CHOICES", "MICRO", "MICRO_DESCRIPTION", "plan_notes", "count_runs")

#: ``--workload micro``: the three overhead scenarios of the published targets.
MICRO: tuple[tuple[str, int], ...] = (("insert", 1), ("read", 1), ("short", 16))
#: What ``micro`` runs, for ``--help``, ``--list`` and docs/benchmarks.md.
MICRO_DESCRIPTION = (
    "the overhead goals' cells in one run: "
    + ", ".join(f"{name} at {threads} thread{'s' if threads > 1 else ''}" for name, threads in MICRO)
    + " (--threads does not apply)"
)
WORKLOAD_CHOICES: tuple[str, ...] = (*WORKLOADS, "micro")

#: Seconds a cell needs beyond its duration (processes starting, database seeding), for estimates.
SETUP_ESTIMATE = 0.7


@dataclass(frozen=True)
class Cell:
    """One strategy on one workload at one concurrency."""

    workload: str
    strategy: str
    threads: int  # per process
    processes: int = 1
    duration: float = 3.0
    repeats: int = 1

    @property
    def group(self) -> tuple[str, int, int]:
        """Cells with the same group share a table."""
        return (self.workload, self.threads, self.processes)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PlanOptions:
    """The choices of one ``bench`` invocation (already validated)."""

    workloads: tuple[str, ...] = ("write",)
    #: ``None``: each workload's default thread counts (16; 1 for ``insert``).
    threads: tuple[int, ...] | None = None
    processes: tuple[int, ...] = (8,)
    threads_per_process: int = 2
    duration: float = 3.0
    repeats: int = 1
    #: ``None``: each workload's default strategies.
    strategies: tuple[str, ...] | None = None
    extra: dict[str, object] = field(default_factory=dict)


def default_strategies(workload: str) -> tuple[str, ...]:
    """The strategies a workload compares unless ``--strategies`` says otherwise.

    Reads are the same on every raw per-thread connection, so read-only
    workloads compare sqlitefair with one of them (``stdlib-immediate``);
    very short transactions compare it with an unfair lock, and the default
    hand-off with strict hand-off.
    """
    sqlitefair = tuple(name for name, s in STRATEGIES.items() if s.is_sqlitefair)
    if workload == "read":
        return ("stdlib-immediate", *(name for name in sqlitefair if not STRATEGIES[name].writes_only))
    if workload == "insert":
        return ("stdlib-immediate", *(name for name in sqlitefair if STRATEGIES[name].default))
    if workload == "short":
        return ("unfair-lock", "stdlib-immediate", *sqlitefair)
    return tuple(name for name, s in STRATEGIES.items() if s.default)


def build_plan(options: PlanOptions) -> list[Cell]:
    """Every cell of a run, in the order they run (grouped for the tables)."""
    cells: list[Cell] = []

    def add(workload: str, threads: int, processes: int = 1) -> None:
        names = options.strategies if options.strategies is not None else default_strategies(workload)
        for name in names:
            cell = Cell(workload, name, threads, processes, options.duration, options.repeats)
            if cell not in cells:
                cells.append(cell)

    for workload in options.workloads:
        if workload == "micro":
            for name, threads in MICRO:
                add(name, threads)
        elif WORKLOADS[workload].cross_process:
            for processes in options.processes:
                add(workload, options.threads_per_process, processes)
        else:
            for threads in options.threads or WORKLOADS[workload].default_threads:
                add(workload, threads)
    return cells


def _threads_text(threads: tuple[int, ...]) -> str:
    return ",".join(map(str, threads)) + (" threads" if threads != (1,) else " thread")


def plan_notes(options: PlanOptions) -> list[str]:
    """Lines to show before a run where ``--threads`` overrides a workload's own thread counts.

    ``insert`` is a single-thread measurement; asked for more threads, it
    runs at them, and says so.
    """
    notes = []
    if options.threads is None:
        return notes
    for name in options.workloads:
        workload = WORKLOADS.get(name)
        if workload is None or workload.cross_process or workload.default_threads == (16,):
            continue
        if options.threads != workload.default_threads:
            notes.append(
                f"note: {name} runs at {_threads_text(options.threads)} as --threads asks; without --threads it "
                f"runs at {_threads_text(workload.default_threads)} ({workload.description})"
            )
    return notes


def count_runs(cells: list[Cell], interpreters: int = 1) -> int:
    """How many runs a plan makes: every cell's repeats, in every interpreter (the progress counter's total)."""
    return interpreters * sum(c.repeats for c in cells)


def estimate_seconds(cells: list[Cell], interpreters: int = 1) -> float:
    """A rough wall-time estimate, shown before a long run starts."""
    return interpreters * sum(c.repeats * (c.duration + SETUP_ESTIMATE + 0.1 * c.processes) for c in cells)
