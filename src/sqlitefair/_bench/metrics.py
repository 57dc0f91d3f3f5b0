"""Summary statistics of latency samples and per-worker counts.

Pure functions on plain lists, so they can be unit-tested on known inputs
and used on numbers that came back from other interpreters.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Mapping, Sequence

__all__ = ("percentile", "summarize", "jain_index", "median", "median_of", "ccdf_points")

#: The percentiles every latency summary reports (key: fraction).
PERCENTILES: Mapping[str, float] = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when empty).

    Nearest rank (no interpolation) so that p99.9 of 1,000 samples is the
    single worst-but-one sample that really happened, and max is p100.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction!r}")
    if not sorted_values:
        return 0.0
    rank = math.ceil(round(fraction * len(sorted_values), 9))
    return float(sorted_values[min(max(rank, 1), len(sorted_values)) - 1])


def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """count, mean, p50/p90/p99/p99.9 and max of ``values`` (seconds in, seconds out)."""
    ordered = sorted(values)
    out: dict[str, float | int] = {"count": len(ordered)}
    out["mean"] = math.fsum(ordered) / len(ordered) if ordered else 0.0
    for name, fraction in PERCENTILES.items():
        out[name] = percentile(ordered, fraction)
    out["max"] = float(ordered[-1]) if ordered else 0.0
    return out


def jain_index(shares: Sequence[float]) -> float | None:
    """Jain's fairness index ``(sum x)^2 / (n * sum x^2)`` of per-worker throughputs.

    1.0 when every worker got the same share, ``1/n`` when one got everything;
    ``None`` when nobody got anything (the index is undefined).
    """
    if any(x < 0 for x in shares):
        raise ValueError("shares must be >= 0")
    squares = math.fsum(x * x for x in shares)
    if not shares or squares == 0.0:
        return None
    total = math.fsum(shares)
    return total * total / (len(shares) * squares)


def median(values: Sequence[float | int | None]) -> float | None:
    """Median of the values that are not ``None`` (``None`` if there are none)."""
    present = [v for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def median_of(records: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Key-wise median of a list of flat-or-nested dicts of numbers (repeats of one cell).

    Nested dicts are merged recursively; lists and strings are left out
    (they stay in the raw repeats); booleans are OR-ed (a flag raised in any
    repeat stays raised).
    """
    out: dict[str, object] = {}
    keys: list[str] = []
    for record in records:
        keys.extend(k for k in record if k not in keys)
    for key in keys:
        values = [r.get(key) for r in records]
        sample = next((v for v in values if v is not None), None)
        if isinstance(sample, bool):
            out[key] = any(bool(v) for v in values)
        elif isinstance(sample, (int, float)):
            out[key] = median([v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)])
        elif isinstance(sample, Mapping):
            out[key] = median_of([v for v in values if isinstance(v, Mapping)])
        elif sample is None:
            out[key] = None
    return out


def ccdf_points(values: Iterable[float], points: int = 160) -> list[tuple[float, float]]:
    """(latency, share of samples at least that slow) pairs for a log-log tail plot.

    Quantiles are spaced logarithmically towards the tail, so the plot keeps
    the worst samples (including the maximum) from many thousands with a few
    hundred points.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return []
    decades = math.log10(n)
    picked: dict[int, None] = {}
    for i in range(points):
        share_above = 10 ** (-decades * i / max(points - 1, 1))  # 1 .. 1/n
        index = min(n - 1, max(0, math.ceil((1.0 - share_above) * n)))
        picked[index] = None
    picked[n - 1] = None
    return [(float(ordered[i]), (n - i) / n) for i in sorted(picked)]
