"""The figures the guide quotes are the published benchmark's, now and after it is re-run.

docs/guide.md sums up the published run (benchmarks/results/results.json, which
benchmarks/run_all.py writes with docs/benchmarks.md): write contention at 16
threads, stdlib BEGIN IMMEDIATE with SQLite's busy handler against sqlitefair, on
the GIL build and the free-threaded build.  Each figure is recomputed here from
the results file and must appear, rounded as the guide rounds it, in the
guide's sentence; a new run with other figures fails this test until the guide
says them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "results.json"
GUIDE = ROOT / "docs" / "guide.md"


def _write_cell(cells: list[dict[str, Any]], strategy: str, free_threaded: bool) -> dict[str, Any]:
    """The write@16 cell of ``strategy`` on the free-threaded interpreter, or on the GIL build of the
    same version (the run may hold other GIL builds too, e.g. 3.11)."""
    ft_labels = {c["interpreter"] for c in cells if c.get("free_threaded_build")}
    assert len(ft_labels) == 1, f"expected one free-threaded interpreter in the published run, found {ft_labels}"
    (ft_label,) = ft_labels
    label = ft_label if free_threaded else ft_label.removesuffix("t")
    found = [
        c for c in cells
        if c["workload"] == "write" and c["threads"] == 16 and c["processes"] == 1
        and c["strategy"] == strategy and c["interpreter"] == label
    ]
    assert len(found) == 1, f"expected one write@16 cell of {strategy} (free-threaded: {free_threaded}), found {len(found)}"
    return found[0]["median"]["write"]  # type: ignore[no-any-return]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s"


def test_the_guides_summary_of_the_published_run_matches_its_results() -> None:
    cells = json.loads(RESULTS.read_text())["cells"]
    raw, raw_ft = _write_cell(cells, "stdlib-immediate", False), _write_cell(cells, "stdlib-immediate", True)
    fair, fair_ft = _write_cell(cells, "sqlitefair", False), _write_cell(cells, "sqlitefair", True)
    text = " ".join(GUIDE.read_text().split())  # the sentence spans lines
    expected = [
        f"median transaction took {raw['latency']['p50'] * 1e6:.0f} µs",
        f"p99.9 about {round(raw['latency']['p999'] * 10) * 100:.0f} ms",
        f"the slowest {_s(raw['latency']['max'])} ({_s(raw_ft['latency']['max'])} on the free-threaded build)",
        f"slowest transaction took {_ms(fair['latency']['max'])} ({_ms(fair_ft['latency']['max'])} free-threaded)",
        f"at {fair['throughput'] / raw['throughput']:.0%} ({fair_ft['throughput'] / raw_ft['throughput']:.0%}) of",
        f"with {int(fair['errors'])} errors",
    ]
    missing = [claim for claim in expected if claim not in text]
    assert not missing, f"docs/guide.md does not say what the published run measured: {missing}"


def test_the_check_reads_the_guides_sentence() -> None:
    """The claims checked above are in the guide's opening section, where a newcomer reads them."""
    section = GUIDE.read_text().split("## The pool", 1)[0]
    assert re.search(r"slowest transaction took \d+ ms", " ".join(section.split()))
