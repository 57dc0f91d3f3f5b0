"""Turning a result into text: the environment header, one table per group,
a verdict line, the goals, and the JSON file.

Plain text with aligned columns, so it reads the same in a terminal, a CI
log and a Markdown code block.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

from .workloads import WORKLOADS

__all__ = (
    "fmt_seconds",
    "fmt_count",
    "format_table",
    "render",
    "render_environment",
    "render_groups",
    "render_targets",
    "verdict",
    "groups",
    "gil_warnings",
    "write_json",
)

SQLITEFAIR = ("sqlitefair", "sqlitefair-apsw")


def fmt_seconds(seconds: float | None) -> str:
    """``0.42 ms``, ``12.3 ms``, ``3.02 s``; µs below a millisecond."""
    if seconds is None:
        return "-"
    if seconds == 0:
        return "0"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.2f} s"


def fmt_count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_ratio(value: float) -> str:
    return f"{value:,.0f}x" if value >= 10 else f"{value:.1f}x"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """Aligned plain-text columns: the first ``left`` columns left-aligned, the rest right-aligned."""
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def groups(result: dict[str, Any]) -> list[tuple[tuple[str, str, int, int], list[dict[str, Any]]]]:
    """Cells grouped by (interpreter, workload, threads, processes), in run order."""
    out: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    for cell in result.get("cells", []):
        key = (cell["interpreter"], cell["workload"], cell["threads"], cell["processes"])
        out.setdefault(key, []).append(cell)
    return list(out.items())


def _interp(result: dict[str, Any], label: str) -> dict[str, Any]:
    return next((i for i in result.get("interpreters", []) if i["label"] == label), {})


def _errors_text(data: dict[str, Any]) -> str:
    parts = [f"{fmt_count(data.get(f'errors_{e}'))} {e}" for e in ("locked", "timeout", "other") if data.get(f"errors_{e}")]
    return ", ".join(parts) if parts else "0"


def _row(cell: dict[str, Any], kind: str, show_kind: bool) -> list[str]:
    name = cell["strategy"] + (f" {kind}" if show_kind else "")
    if cell.get("gil_reenabled"):
        name += " [GIL ON!]"
    if not cell.get("consistent", True) and cell.get("median"):
        name += " *"
    data = cell.get("median", {}).get(kind)
    if not data:
        error = str((cell.get("harness_errors") or ["no result"])[0])
        return [name, "FAILED", error[:60]] + [""] * 7
    lat, wait = data.get("latency") or {}, data.get("wait") or {}
    return [
        name,
        fmt_count(data.get("ok")),
        _errors_text(data),
        fmt_count(data.get("throughput")),
        fmt_seconds(lat.get("p50")),
        fmt_seconds(lat.get("p99")),
        fmt_seconds(lat.get("p999")),
        fmt_seconds(lat.get("max")),
        fmt_seconds(wait.get("max")) if wait else "n/a",
        "-" if data.get("jain") is None else f"{data['jain']:.3f}",
    ]


LEGEND = (
    "latency: from asking for the transaction until it committed (errors excluded); max wait: until BEGIN "
    "succeeded (n/a: a deferred BEGIN waits inside its statements); tx/s: committed inside the window; "
    "fairness: Jain's index of per-thread throughput (1.000 = all equal)."
)

HEADERS = ("strategy", "ok", "errors", "tx/s", "p50", "p99", "p99.9", "max", "max wait", "fairness")


def group_title(cell: dict[str, Any], interp: dict[str, Any] | None = None) -> str:
    workload = WORKLOADS[cell["workload"]]
    where = f"{cell['threads']} thread{'s' if cell['threads'] != 1 else ''}"
    if cell["processes"] > 1:
        where += f" x {cell['processes']} processes"
    runs = f"{cell['duration']:g} s" + (f", median of {cell['repeats']} runs" if cell["repeats"] > 1 else "")
    title = f"{cell['workload']} ({workload.description}) - {where}, {runs}"
    if interp:
        title += f" - Python {interp['label']}"
    return title


def render_group(cells: list[dict[str, Any]], interp: dict[str, Any] | None = None) -> str:
    kinds = [k for k in ("write", "read") if any(k in c.get("kinds", []) for c in cells)] or ["write"]
    show_kind = len(kinds) > 1
    rows = [_row(c, k, show_kind) for k in kinds for c in cells]
    lines = [group_title(cells[0], interp), format_table(HEADERS, rows)]
    flagged = [c for c in cells if c.get("gil_reenabled")]
    if flagged:
        lines.append(gil_banner(flagged, interp or {}))
    for cell in cells:
        for error in dict.fromkeys(cell.get("harness_errors", [])):
            lines.append(f"! {cell['strategy']}: a run failed: {error}")
        if not cell.get("consistent", True) and cell.get("median"):
            counts = [(r.get("committed"), r.get("expected_committed")) for r in cell["runs"] if "committed" in r]
            lines.append(f"* {cell['strategy']}: committed rows in the file {counts} differ from the successes reported")
    line = verdict(cells)
    if line:
        lines.append(line)
    return "\n".join(lines)


def _gil_cause(interp: dict[str, Any], modules: list[str]) -> str:
    if str(interp.get("python_gil_env") or "") == "1":
        return "PYTHON_GIL=1 is set in the environment"
    return f"importing {' or '.join(modules) or 'an extension module'} switched it back on"


def gil_banner(cells: list[dict[str, Any]], interp: dict[str, Any]) -> str:
    """The loud line under a table whose free-threaded figures were measured with the GIL on."""
    from .strategies import STRATEGIES

    names = ", ".join(c["strategy"] for c in cells)
    modules = sorted({STRATEGIES[c["strategy"]].backend_module for c in cells if c["strategy"] in STRATEGIES})
    return (
        f"!!! GIL RE-ENABLED: Python {cells[0]['interpreter']} is a free-threaded build, but the GIL was ON during "
        f"{names} ({_gil_cause(interp, modules)}). These are GIL figures, not free-threaded ones."
    )


def gil_warnings(result: dict[str, Any]) -> list[str]:
    """One loud line per free-threaded interpreter whose GIL was on, at import or during a cell."""
    out = []
    for interp in result.get("interpreters", []):
        if not interp.get("free_threaded_build"):
            continue
        on = [k.rsplit("_", 1)[-1] for k, v in interp.items() if k.startswith("gil_enabled_after_import_") and v]
        if on:
            out.append(
                f"!!! GIL RE-ENABLED: Python {interp['label']} is a free-threaded build but the GIL is on "
                f"({_gil_cause(interp, on)}); cells using {', '.join(on)} are flagged [GIL ON!]."
            )
    return out


def verdict(cells: list[dict[str, Any]]) -> str:
    """One line comparing sqlitefair with the other strategies of a group."""
    mine = next((c for c in cells if c["strategy"] == "sqlitefair" and c.get("median")), None)
    mine = mine or next((c for c in cells if c["strategy"] in SQLITEFAIR and c.get("median")), None)
    others = [c for c in cells if c["strategy"] not in SQLITEFAIR and c.get("median")]
    if mine is None or not others:
        return ""
    # Writes are what strategies differ in; a read-only workload compares reads.
    kind = "write" if WORKLOADS[mine["workload"]].write_share > 0 else "read"
    me = mine["median"].get(kind)
    if not me:
        return ""
    noun = "transactions" if kind == "write" else "reads"
    my_max = me["latency"]["max"]
    of = f"{kind} " if len(mine.get("kinds", [])) > 1 else ""
    head = f"verdict: {mine['strategy']}: {fmt_count(me['errors'])} errors, max {of}latency {fmt_seconds(my_max)}"
    comparisons, failures = [], []
    for cell in others:
        data = cell["median"].get(kind)
        if not data:
            continue
        name = cell["strategy"]
        if data["errors"] > me["errors"]:
            what = '"database is locked" errors' if data["errors_locked"] >= data["errors"] / 2 else "errors"
            share = data["errors"] / (data["errors"] + data["ok"])
            failures.append(f"{name}: {fmt_count(data['errors'])} {what} ({share:.0%} of {noun})")
            continue
        their_max = data["latency"]["max"]
        if my_max > 0 and their_max > 0:
            ratio = their_max / my_max
            if 0.8 <= ratio <= 1.25:
                comparisons.append(f"about the same as {name} ({fmt_seconds(their_max)})")
            elif ratio > 1:
                comparisons.append(f"{_fmt_ratio(ratio)} lower than {name} ({fmt_seconds(their_max)})")
            else:
                comparisons.append(f"{_fmt_ratio(1 / ratio)} higher than {name} ({fmt_seconds(their_max)})")
    same = [c for c in comparisons if c.startswith("about the same as ")]
    if len(same) > 1:
        names = [c[len("about the same as ") :].split(" (")[0] for c in same]
        comparisons = [c for c in comparisons if c not in same] + [f"about the same as {', '.join(names)}"]
    line = head + (" = " + ", ".join(comparisons) if comparisons else "")
    reference = next((c for c in others if c["strategy"] == "stdlib-immediate"), None) or others[0]
    ref = reference["median"].get(kind)
    if ref and ref.get("throughput"):
        line += f"; {of}throughput {me['throughput'] / ref['throughput']:.0%} of {reference['strategy']}"
    if failures:
        line += "; " + "; ".join(failures)
    return line + "."


def render_environment(result: dict[str, Any]) -> str:
    host = result.get("host", {})
    load = host.get("load_average")
    lines = [
        f"sqlitefair bench {result.get('sqlitefair_version') or ''} - {host.get('cpus')} CPUs ({host.get('platform')}), "
        f"load {' '.join(map(str, load)) if load else 'unknown'}; database on {host.get('fs_type')} ({host.get('db_location')})"
    ]
    for interp in result.get("interpreters", []):
        build = "free-threaded build" if interp.get("free_threaded_build") else "GIL build"
        gil = interp.get("gil_enabled_after_import_sqlite3", interp.get("gil_enabled_at_start"))
        text = f"  Python {interp['label']} ({interp.get('implementation')}, {build}; GIL enabled: {'yes' if gil else 'no'}"
        if interp.get("free_threaded_build") and "gil_enabled_after_import_apsw" in interp:
            text += f", after importing apsw: {'YES' if interp['gil_enabled_after_import_apsw'] else 'no'}"
        text += f") - SQLite {interp.get('sqlite_version')}"
        if interp.get("apsw_version"):
            text += f", apsw {interp['apsw_version']}"
        lines.append(text)
    if host.get("fs_type") in ("tmpfs", "ramfs"):
        lines.append("  note: the database is on a RAM file system; pass --db PATH on a real disk for disk figures")
    if load and host.get("cpus") and load[0] > 0.5 * host["cpus"]:
        lines.append(f"  note: the machine was busy (load {load[0]}): figures will be noisy")
    return "\n".join(lines)


def render_groups(result: dict[str, Any]) -> str:
    blocks = []
    for (label, *_), cells in groups(result):
        blocks.append(render_group(cells, _interp(result, label)))
    return "\n\n".join(blocks)


#: What each status of the goals table means: the project's goals, judged on one run, not a test of the machine.
STATUS_KEY = (
    ("PASS", "PASS: meets the project's goal on this run"),
    ("MISS", "MISS: below the project's goal on this run (a figure to compare, not an error; it varies with "
     "the machine and its load)"),
    ("info", "info: shown, not judged"),
)


def render_targets(result: dict[str, Any], *, measured_only: bool = True) -> str:
    """The project's published goals this result can judge, one line each (PASS / MISS / info), and what those mean."""
    targets = [t for t in result.get("targets", []) if not measured_only or t["status"] != "n/a"]
    if not targets:
        return ""
    several = len({t["interpreter"] for t in targets}) > 1
    rows = []
    for t in targets:
        row = [t["status"], t["what"], t["strategy"]]
        if several:
            row.append(t["interpreter"])
        row += [t["goal"], t["figure"], "; ".join(t["notes"])]
        rows.append(row)
    headers = ["", "goal", "strategy"] + (["python"] if several else []) + ["target", "measured", "notes"]
    if not any(r[-1] for r in rows):
        headers.pop()
        rows = [r[:-1] for r in rows]
    left = len(headers)
    skipped = sum(1 for t in result.get("targets", []) if t["status"] == "n/a") // max(1, len({(t["interpreter"], t["strategy"]) for t in result["targets"]}))
    note = f" ({skipped} more need cells this run did not measure: benchmarks/run_all.py runs them all)" if skipped else ""
    statuses = {t["status"] for t in targets}
    key = "; ".join(text for status, text in STATUS_KEY if status in statuses)
    return f"project goals (judged on this run){note}\n" + format_table(headers, rows, left=left) + f"\n{key}."


def render(result: dict[str, Any]) -> str:
    """The whole terminal report."""
    parts = [render_environment(result)]
    parts.extend(gil_warnings(result))
    for skipped in result.get("skipped", []):
        parts.append(f"skipped {skipped['strategy']} on Python {skipped['interpreter']}: {skipped['reason']}")
    for skipped in result.get("skipped_interpreters", []):
        parts.append(f"skipped interpreter {skipped['interpreter']}: {skipped['reason']}")
    parts.append("")
    parts.append(render_groups(result))
    if result.get("cells"):
        parts.extend(["", LEGEND])
    targets = render_targets(result)
    if targets:
        parts.extend(["", targets])
    return "\n".join(parts).rstrip() + "\n"


def write_json(result: dict[str, Any], path: str) -> None:
    """Write ``result`` (every repeat's figures and the environment) atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
