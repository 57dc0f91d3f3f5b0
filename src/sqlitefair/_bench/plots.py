"""PNG plots of a result, drawn with matplotlib (imported only here, only when asked).

* ``latency-ccdf-*.png``: per strategy, the share of transactions at least
  as slow as x, log-log, at the highest contention measured: the tail that
  percentiles summarise.
* ``write-scaling-*.png``: throughput and p99 against threads.
* ``read-scaling.png``: read throughput against threads, one line per
  interpreter and strategy, each in its own colour (GIL build against
  free-threaded build when both ran).
"""

from __future__ import annotations

import os
import re
from typing import Any

from .workloads import READ_ROWS

__all__ = ("plot_all", "MISSING_MATPLOTLIB")

MISSING_MATPLOTLIB = "plots skipped: matplotlib is not installed (install it with: pip install 'sqlitefair[bench]')"

_STYLE = {
    "stdlib-deferred": ("tab:gray", ":"),
    "stdlib-immediate": ("tab:red", "-"),
    "ruby-1ms": ("tab:orange", "--"),
    "unfair-lock": ("tab:purple", "-."),
    "sqlitefair": ("tab:blue", "-"),
    "sqlitefair-apsw": ("tab:green", "-"),
    "sqlitefair-strict": ("tab:cyan", "--"),
    "sqlitefair-write": ("tab:brown", "-"),
    "sqlitefair-group": ("tab:pink", "-"),
}


def _style(name: str) -> dict[str, Any]:
    color, line = _STYLE.get(name, (None, "-"))
    return {"color": color, "linestyle": line, "linewidth": 2.2 if name.startswith("sqlitefair") else 1.5}


def _slug(text: str) -> str:
    return str(re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-"))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _thread_axis(ax: Any, threads: list[int]) -> None:
    """A log2 axis labelled with the thread counts themselves (1, 2, 4, 16), not powers of two."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(threads)
    ax.set_xticklabels([str(t) for t in threads])
    ax.minorticks_off()


def _label(cell: dict[str, Any]) -> str:
    return str(cell["strategy"]) + (" [GIL ON!]" if cell.get("gil_reenabled") else "")


def plot_ccdf(result: dict[str, Any], folder: str, interpreter: str, workload: str = "write") -> str | None:
    """Latency tail of every strategy at the highest thread count of ``workload`` (one process)."""
    cells = [c for c in result["cells"] if c["interpreter"] == interpreter and c["workload"] == workload and c["processes"] == 1]
    cells = [c for c in cells if c.get("ccdf", {}).get("write")]
    if not cells:
        return None
    threads = max(c["threads"] for c in cells)
    cells = [c for c in cells if c["threads"] == threads]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for cell in cells:
        points = cell["ccdf"]["write"]
        ax.step([p[0] * 1e3 for p in points], [p[1] for p in points], where="post", label=_label(cell), **_style(cell["strategy"]))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency: asking for the transaction until it committed (ms)")
    ax.set_ylabel("share of transactions at least this slow")
    ax.set_title(f"{workload} contention, {threads} threads - Python {interpreter}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path = os.path.join(folder, f"latency-ccdf-{_slug(interpreter)}-{workload}-{threads}t.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scaling(result: dict[str, Any], folder: str, interpreter: str, workload: str = "write") -> str | None:
    """Throughput and p99 latency against threads, one line per strategy."""
    cells = [
        c for c in result["cells"]
        if c["interpreter"] == interpreter and c["workload"] == workload and c["processes"] == 1 and c.get("median")
    ]
    if len({c["threads"] for c in cells}) < 2:
        return None
    kind = "write" if workload != "read" else "read"
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7), sharex=True)
    for name in dict.fromkeys(c["strategy"] for c in cells):
        mine = sorted((c for c in cells if c["strategy"] == name and kind in c["median"]), key=lambda c: c["threads"])
        xs = [c["threads"] for c in mine]
        top.plot(xs, [c["median"][kind]["throughput"] for c in mine], marker="o", label=name, **_style(name))
        bottom.plot(xs, [c["median"][kind]["latency"]["p99"] * 1e3 for c in mine], marker="o", label=name, **_style(name))
    top.set_ylabel(f"{kind}s per second (committed)")
    top.set_title(f"{workload}: throughput and p99 against threads - Python {interpreter}")
    bottom.set_ylabel("p99 latency (ms)")
    bottom.set_yscale("log")
    bottom.set_xlabel("threads")
    _thread_axis(bottom, sorted({c["threads"] for c in cells}))
    for ax in (top, bottom):
        ax.grid(True, which="both", alpha=0.3)
    top.legend(fontsize="small")
    path = os.path.join(folder, f"{workload}-scaling-{_slug(interpreter)}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_read_scaling(result: dict[str, Any], folder: str) -> str | None:
    """Reads per second, and speed-up over one thread, against threads, per interpreter and strategy.

    Titled by the interpreters that ran (GIL vs free-threaded build only when both did).
    """
    cells = [c for c in result["cells"] if c["workload"] == "read" and c.get("median", {}).get("read")]
    if len({c["threads"] for c in cells}) < 2:
        return None
    ft = {i["label"]: i.get("free_threaded_build") for i in result.get("interpreters", [])}
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7.5), sharex=True)
    palette = [f"tab:{c}" for c in ("blue", "red", "green", "orange", "purple", "brown", "pink", "olive", "cyan", "gray")]
    lines = {"stdlib-immediate": ("--", "s"), "sqlitefair": ("-", "o"), "sqlitefair-apsw": ("-.", "^")}
    threads = sorted({c["threads"] for c in cells})
    ran = list(dict.fromkeys(c["interpreter"] for c in cells))
    pairs = [(i, s) for i in ran for s in dict.fromkeys(c["strategy"] for c in cells if c["interpreter"] == i)]
    for n, (interp, strategy) in enumerate(pairs):  # a colour per line, not per interpreter
        mine = sorted((c for c in cells if c["interpreter"] == interp and c["strategy"] == strategy), key=lambda c: c["threads"])
        build = "free-threaded" if ft.get(interp) else "GIL"
        flag = " [GIL ON!]" if any(c.get("gil_reenabled") for c in mine) else ""
        linestyle, marker = lines.get(strategy, (":", "x"))
        style = {"color": palette[n % len(palette)], "linestyle": linestyle, "marker": marker}
        xs = [c["threads"] for c in mine]
        ys = [c["median"]["read"]["throughput"] for c in mine]
        top.plot(xs, ys, label=f"{interp} ({build}) {strategy}{flag}", **style)
        if mine[0]["threads"] == 1 and ys[0]:
            bottom.plot(xs, [y / ys[0] for y in ys], **style)
    cpus = result.get("host", {}).get("cpus") or max(threads)
    bottom.plot(threads, [min(t, cpus) for t in threads], color="black", linestyle=":", label=f"ideal ({cpus} CPUs)")
    top.set_ylabel(f"reads per second ({READ_ROWS} rows each)")
    builds = [f"Python {i} ({'free-threaded' if ft.get(i) else 'GIL'} build)" for i in ran]
    top.set_title("read scaling: " + " vs ".join(builds))
    bottom.set_ylabel("speed-up over 1 thread")
    bottom.set_xlabel("reader threads")
    _thread_axis(bottom, threads)
    for ax in (top, bottom):
        ax.grid(True, which="both", alpha=0.3)
    top.legend(fontsize="small")
    bottom.legend(fontsize="small")
    path = os.path.join(folder, "read-scaling.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(result: dict[str, Any], folder: str) -> tuple[list[str], str | None]:
    """Draw every plot the result has data for into ``folder``; return (files, message).

    Without matplotlib, returns no files and the message saying how to get it.
    """
    try:
        _pyplot()
    except ImportError:
        return [], MISSING_MATPLOTLIB
    os.makedirs(folder, exist_ok=True)
    written = []
    for interp in result.get("interpreters", []):
        for workload in ("write", "short"):
            written.append(plot_ccdf(result, folder, interp["label"], workload))
        for workload in ("write", "mixed"):
            written.append(plot_scaling(result, folder, interp["label"], workload))
    written.append(plot_read_scaling(result, folder))
    files = [w for w in written if w]
    return files, None if files else "no plots: this run has nothing to plot"
