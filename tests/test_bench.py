"""The benchmark harness (``python -m sqlitefair bench``): correctness, not speed.

Nothing here asserts a timing.  A tiny configuration of every strategy and
workload runs for real (child processes, a real database) to check that the
numbers the harness reports add up; the rest are pure functions on known
inputs and fabricated results.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sqlitefair.__main__ import main
from sqlitefair._bench import environment, interpreters, metrics, report, targets
from sqlitefair._bench.plan import Cell, PlanOptions, build_plan, default_strategies, plan_notes
from sqlitefair._bench.runner import RunSettings, run_benchmark
from sqlitefair._bench.strategies import STRATEGIES, classify_error
from sqlitefair._bench.workloads import (
    WORKLOADS,
    bump_counter,
    committed_count,
    create_database,
    insert_one,
    is_benchmark_database,
    read_page,
    read_small,
    write_item,
)

HAVE_APSW = importlib.util.find_spec("apsw") is not None


# -- metrics on known inputs -------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert metrics.percentile(values, 0.50) == 50.0
    assert metrics.percentile(values, 0.99) == 99.0
    assert metrics.percentile(values, 0.999) == 100.0
    assert metrics.percentile(values, 1.0) == 100.0
    assert metrics.percentile(values, 0.0) == 1.0
    assert metrics.percentile([7.0], 0.5) == 7.0
    assert metrics.percentile([], 0.5) == 0.0
    thousand = [float(v) for v in range(1, 1001)]
    assert metrics.percentile(thousand, 0.999) == 999.0
    with pytest.raises(ValueError):
        metrics.percentile(values, 1.5)


def test_summarize() -> None:
    values = [0.004, 0.001, 0.003, 0.002]
    s = metrics.summarize(values)
    assert s["count"] == 4
    assert s["p50"] == 0.002 and s["max"] == 0.004 and s["p99"] == 0.004
    assert math.isclose(s["mean"], 0.0025)
    assert metrics.summarize([]) == {"count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0}


def test_jain_index() -> None:
    assert metrics.jain_index([5, 5, 5, 5]) == pytest.approx(1.0)
    assert metrics.jain_index([10, 0, 0, 0]) == pytest.approx(0.25)
    assert metrics.jain_index([1, 2, 3]) == pytest.approx(36 / (3 * 14))
    assert metrics.jain_index([]) is None
    assert metrics.jain_index([0, 0]) is None
    with pytest.raises(ValueError):
        metrics.jain_index([1, -1])


def test_median_of_repeats() -> None:
    runs = [
        {"throughput": 10.0, "latency": {"max": 3.0}, "flag": False, "per_worker_ok": [1, 2], "wait": None},
        {"throughput": 30.0, "latency": {"max": 1.0}, "flag": True, "per_worker_ok": [3, 4], "wait": None},
        {"throughput": 20.0, "latency": {"max": 2.0}, "flag": False, "per_worker_ok": [5, 6], "wait": None},
    ]
    m = metrics.median_of(runs)
    assert m["throughput"] == 20.0
    assert m["latency"] == {"max": 2.0}
    assert m["flag"] is True  # raised in any run stays raised
    assert "per_worker_ok" not in m  # raw lists stay in the runs
    assert m["wait"] is None


def test_ccdf_points_keep_the_tail() -> None:
    values = [float(v) for v in range(1, 10001)]
    random.Random(3).shuffle(values)
    points = metrics.ccdf_points(values)
    assert points[0] == (1.0, 1.0)
    assert points[-1] == (10000.0, 1 / 10000)
    assert len(points) <= 161
    shares = [p[1] for p in points]
    assert shares == sorted(shares, reverse=True)
    assert metrics.ccdf_points([]) == []


# -- pieces -------------------------------------------------------------------


def test_classify_error() -> None:
    import sqlitefair

    assert classify_error(sqlite3.OperationalError("database is locked")) == "locked"
    assert classify_error(sqlitefair.PoolTimeout("timed out")) == "timeout"
    assert classify_error(sqlite3.OperationalError("no such table: x")) == "other"
    assert classify_error(ValueError("x")) == "other"


def test_default_plan_is_the_quick_comparison() -> None:
    cells = build_plan(PlanOptions())
    names = [c.strategy for c in cells]
    assert names[:4] == ["stdlib-deferred", "stdlib-immediate", "ruby-1ms", "sqlitefair"]
    assert {c.workload for c in cells} == {"write"} and {c.threads for c in cells} == {16}
    assert "unfair-lock" not in names
    micro = build_plan(PlanOptions(workloads=("micro",), strategies=None))
    assert {(c.workload, c.threads) for c in micro} == {("insert", 1), ("read", 1), ("short", 16)}
    assert "unfair-lock" in default_strategies("short")
    procs = build_plan(PlanOptions(workloads=("procs",), processes=(2, 8), threads_per_process=3))
    assert {(c.processes, c.threads) for c in procs} == {(2, 3), (8, 3)}


def test_apsw_strategy_is_skipped_where_apsw_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    strategy = STRATEGIES["sqlitefair-apsw"]
    assert strategy.is_sqlitefair and strategy.backend_module == "apsw"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "apsw" else real_find_spec(name, *a))
    reason = strategy.unavailable()
    assert reason is not None and "apsw" in reason
    assert "sqlitefair-apsw" in default_strategies("write")  # listed, then skipped cleanly where unavailable


def test_database_marker_and_counts(tmp_path: Path) -> None:
    path = str(tmp_path / "b.db")
    create_database(path)
    assert is_benchmark_database(path)
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    assert not is_benchmark_database(str(other))
    assert committed_count(path, WORKLOADS["write"]) == 0
    assert committed_count(path, WORKLOADS["short"]) == 0


def _run_bodies(conn: Any) -> None:
    rng = random.Random(1)
    conn.execute("BEGIN IMMEDIATE")
    write_item(conn, rng, 0)
    insert_one(conn, rng, 1)
    bump_counter(conn, rng, 2)
    conn.execute("COMMIT")
    read_page(conn, rng, 0)
    read_small(conn, rng, 0)


def test_workload_bodies_on_sqlite3(tmp_path: Path) -> None:
    path = str(tmp_path / "b.db")
    create_database(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _run_bodies(conn)
    finally:
        conn.close()
    assert committed_count(path, WORKLOADS["write"]) == 2
    assert committed_count(path, WORKLOADS["short"]) == 1


@pytest.mark.skipif(not HAVE_APSW, reason="apsw is not installed")
def test_workload_bodies_on_apsw(tmp_path: Path) -> None:
    import apsw

    path = str(tmp_path / "b.db")
    create_database(path)
    conn = apsw.Connection(path)
    try:
        _run_bodies(conn)
        assert conn.execute("SELECT count(*) FROM items").fetchall()[0][0] == 2
    finally:
        conn.close()


def test_discover_without_uv_or_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(interpreters.shutil, "which", lambda name: None)
    monkeypatch.setattr(interpreters, "repo_root", lambda: tmp_path)  # no scripts/provision-python.sh here
    messages: list[str] = []
    assert interpreters.discover(log=messages.append) == []
    assert any("uv" in m for m in messages) and any("provision" in m for m in messages)


def test_discover_reads_provision_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "provision-python.sh").write_text("#!/bin/sh\n")
    monkeypatch.setattr(interpreters.shutil, "which", lambda name: None)
    monkeypatch.setattr(interpreters, "repo_root", lambda: tmp_path)

    class Done:
        returncode = 1  # one flavour missing: the other line still counts
        stdout = f"gil {sys.executable}\nft /nonexistent/python3.14t\n"
        stderr = "not built yet: ft\n"

    monkeypatch.setattr(interpreters, "_run_quietly", lambda argv, timeout=30.0: Done())
    found = interpreters.discover()
    assert [i.path for i in found] == [sys.executable]
    assert "gil" in found[0].found_by


# -- the GIL re-enabled flag ---------------------------------------------------


def test_gil_reenabled_logic() -> None:
    assert environment.gil_reenabled({"free_threaded_build": True, "gil_enabled_after_import": True})
    assert environment.gil_reenabled({"free_threaded_build": True, "gil_enabled_at_end": True})
    assert not environment.gil_reenabled({"free_threaded_build": True, "gil_enabled_after_import": False, "gil_enabled_at_end": False})
    assert not environment.gil_reenabled({"free_threaded_build": False, "gil_enabled_after_import": True})


def _fake_cell(strategy: str, *, gil_on: bool, max_latency: float, errors: int = 0, threads: int = 16) -> dict[str, Any]:
    kind = {
        "ok": 1000, "ok_in_window": 990, "throughput": 330.0, "errors": errors, "errors_locked": errors,
        "errors_timeout": 0, "errors_other": 0, "error_latency_max": 0.0,
        "latency": {"count": 1000, "mean": 0.001, "p50": 0.001, "p90": 0.002, "p99": 0.003, "p999": 0.004, "max": max_latency},
        "wait": {"count": 1000, "mean": 0.001, "p50": 0.001, "p90": 0.002, "p99": 0.003, "p999": 0.004, "max": max_latency},
        "jain": 1.0,
    }
    cell = {
        "interpreter": "3.14.0t", "workload": "write", "strategy": strategy, "threads": threads, "processes": 1,
        "duration": 3.0, "repeats": 1, "kinds": ["write"], "median": {"write": kind},
        "runs": [{"repeat": 1, "kinds": {"write": {**kind, "per_worker_ok": [1] * threads}}, "committed": 1000, "expected_committed": 1000, "consistent": True}],
        "ccdf": {"write": [[0.001, 1.0], [max_latency, 0.001]]}, "consistent": True, "harness_errors": [],
        "free_threaded_build": True, "gil_enabled_after_import": gil_on, "gil_enabled_at_end": gil_on,
    }
    cell["gil_reenabled"] = environment.gil_reenabled(cell)
    return cell


def _fake_result() -> dict[str, Any]:
    result = {
        "schema": 1, "sqlitefair_version": "test", "options": {"duration": 3.0, "repeats": 1},
        "host": {"cpus": 2, "platform": "Linux", "load_average": [0.1, 0.1, 0.1], "fs_type": "ext4", "db_location": "temporary folder"},
        "interpreters": [{
            "label": "3.14.0t", "implementation": "CPython", "free_threaded_build": True, "python_version": "3.14.0",
            "gil_enabled_after_import_sqlite3": False, "gil_enabled_after_import_apsw": True, "sqlite_version": "3.50.4",
        }],
        "cells": [
            _fake_cell("stdlib-immediate", gil_on=False, max_latency=3.0),
            _fake_cell("sqlitefair", gil_on=False, max_latency=0.012),
            _fake_cell("sqlitefair-apsw", gil_on=True, max_latency=0.015),
        ],
    }
    result["targets"] = targets.evaluate(result)
    return result


def test_gil_reenabled_is_flagged_loudly() -> None:
    result = _fake_result()
    assert [c["gil_reenabled"] for c in result["cells"]] == [False, False, True]
    text = report.render(result)
    assert "!!! GIL RE-ENABLED" in text
    assert "sqlitefair-apsw [GIL ON!]" in text
    assert "sqlitefair [GIL ON!]" not in text
    apsw_targets = [t for t in result["targets"] if t["strategy"] == "sqlitefair-apsw" and t["status"] != "n/a"]
    assert apsw_targets and all(any("GIL RE-ENABLED" in n for n in t["notes"]) for t in apsw_targets)
    assert "verdict: sqlitefair: 0 errors, max latency 12 ms = 250x lower than stdlib-immediate (3.00 s)" in text


def test_targets_on_fabricated_result() -> None:
    by_id = {(t["id"], t["strategy"]): t for t in _fake_result()["targets"]}
    assert by_id[("write.errors", "sqlitefair")]["status"] == "PASS"
    assert by_id[("write.max_vs_immediate", "sqlitefair")]["status"] == "PASS"  # 3 s / 12 ms = 250x
    assert by_id[("write.max_vs_immediate", "sqlitefair")]["value"] == pytest.approx(250.0)
    assert by_id[("write.throughput", "sqlitefair")]["status"] == "PASS"  # equal throughput
    assert by_id[("write.p999_vs_fifo", "sqlitefair")]["status"] == "n/a"  # no 1-thread cell
    assert by_id[("procs.jain", "sqlitefair")]["status"] == "n/a"


def test_table_is_aligned() -> None:
    text = report.format_table(["name", "n"], [["a", "1"], ["long name", "1,000"]])
    lines = text.splitlines()
    assert lines[0] == "name           n"
    assert lines[2] == "a              1"
    assert lines[3] == "long name  1,000"


# -- the command line ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "0"], "thread count must be between 1 and 512"),
        (["--threads", "4,x"], "'x' is not a whole number"),
        (["--workload", "nope"], "unknown workload 'nope'"),
        (["--strategies", "sqlitefair,nope"], "unknown strategy 'nope'"),
        (["--duration", "-1"], "duration must be between"),
        (["--duration", "nan"], "duration must be between"),
        (["--repeats", "0"], "repeats must be between 1 and 100"),
        (["--processes", "100"], "process count must be between 1 and 64"),
        (["--python", "/nonexistent/python3"], "does not exist"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err


def test_cli_refuses_to_overwrite_a_foreign_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    precious = tmp_path / "precious.db"
    conn = sqlite3.connect(precious)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--db", str(precious)])
    assert exit_info.value.code == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        main(["bench", "--out", str(tmp_path / "file")])
    assert "is not a folder" in capsys.readouterr().err


def test_cli_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


# -- the harness, for real -----------------------------------------------------


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every strategy on the mixed workload (reads and writes), every workload once, procs with 2 processes."""
    duration = 0.25
    cells = [Cell("mixed", name, 2, 1, duration, 1) for name in STRATEGIES]
    cells += [Cell(w, "sqlitefair", 2, 1, duration, 1) for w in ("write", "read", "insert", "short")]
    cells += [Cell("procs", name, 2, 2, duration, 1) for name in ("stdlib-deferred", "ruby-1ms", "sqlitefair")]
    db = tmp_path_factory.mktemp("bench") / "smoke.db"
    return run_benchmark(cells, [interpreters.current()], RunSettings(db_path=str(db)), {"test": True})


def test_smoke_every_cell_ran(smoke_result: dict[str, Any]) -> None:
    assert not smoke_result["skipped_interpreters"]
    skipped = {s["strategy"] for s in smoke_result["skipped"]}
    ran = {(c["workload"], c["strategy"]) for c in smoke_result["cells"]}
    for name in STRATEGIES:
        assert ("mixed", name) in ran or name in skipped
    for workload in ("write", "read", "insert", "short", "procs"):
        assert (workload, "sqlitefair") in ran
    for cell in smoke_result["cells"]:
        assert cell["harness_errors"] == [], (cell["strategy"], cell["workload"], cell["harness_errors"])


def test_smoke_counts_add_up(smoke_result: dict[str, Any]) -> None:
    for cell in smoke_result["cells"]:
        run = cell["runs"][0]
        workload = WORKLOADS[cell["workload"]]
        assert run["consistent"], (cell["strategy"], cell["workload"], run["committed"], run["expected_committed"])
        writes = run["kinds"].get("write")
        if workload.write_share > 0:
            assert writes is not None
            assert run["committed"] == writes["ok"]  # rows in the file == successes reported
        for data in run["kinds"].values():
            workers = cell["threads"] * cell["processes"]
            assert len(data["per_worker_ok"]) == workers
            assert sum(data["per_worker_ok"]) == data["ok"]
            assert data["latency"]["count"] == data["ok"]
            assert 0 <= data["ok_in_window"] <= data["ok"]
            assert data["errors"] == data["errors_locked"] + data["errors_timeout"] + data["errors_other"]
            assert data["errors_other"] == 0, run["error_messages"]
            assert data["latency"]["p50"] <= data["latency"]["p99"] <= data["latency"]["p999"] <= data["latency"]["max"]
        primary = run["kinds"][workload.primary_kind]
        assert primary["ok"] > 0
        if cell["strategy"] == "stdlib-deferred":
            assert run["kinds"]["write"]["wait"] is None  # a deferred BEGIN's wait cannot be seen
        if cell["strategy"].startswith("sqlitefair"):
            assert primary["errors"] == 0


def test_smoke_json_has_the_environment(smoke_result: dict[str, Any]) -> None:
    text = json.dumps(smoke_result)  # everything is JSON-ready
    back = json.loads(text)
    host = back["host"]
    for key in ("cpus", "platform", "fs_type", "load_average", "db_location"):
        assert key in host
    assert host["cpus"] >= 1 and host["fs_type"]
    (interp,) = back["interpreters"]
    for key in ("python_version", "free_threaded_build", "gil_enabled_after_import_sqlite3", "sqlite_version", "executable"):
        assert key in interp
    assert os.sep not in interp["executable"]  # no paths of the machine in results
    for cell in back["cells"]:
        for key in ("gil_enabled_after_import", "gil_enabled_at_end", "gil_reenabled", "free_threaded_build"):
            assert key in cell
        assert cell["gil_reenabled"] is False or cell["free_threaded_build"]
        assert cell["runs"][0]["backend_sqlite_version"]
    assert back["targets"]
    assert "verdict: sqlitefair" in report.render(back)


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["bench", "-d", "0.2", "-t", "2", "-s", "stdlib-immediate,sqlitefair", "--out", str(out), "--db", str(tmp_path / "b.db")])
    captured = capsys.readouterr()
    assert code == 0
    assert "verdict: sqlitefair:" in captured.out and "stdlib-immediate" in captured.out
    assert "[1/2]" in captured.err and "[2/2]" in captured.err  # progress on stderr
    result = json.loads((out / "results.json").read_text())
    assert [c["strategy"] for c in result["cells"]] == ["stdlib-immediate", "sqlitefair"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert list(out.glob("latency-ccdf-*.png"))
    else:
        assert "pip install 'sqlitefair[bench]'" in captured.err
    assert is_benchmark_database(str(tmp_path / "b.db"))  # the given --db is reused, not removed


def _free_threaded_interpreter() -> str | None:
    """A free-threaded interpreter scripts/provision-python.sh built, if there is one."""
    for interp in interpreters.discover():
        if interp.path.endswith("t") and interpreters.probe(interp, interpreters.child_environment()) is None:
            if interp.free_threaded:
                return interp.path
    return None


def test_gil_flag_on_a_real_free_threaded_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    python = _free_threaded_interpreter()
    if python is None:
        pytest.skip("no free-threaded interpreter provisioned (scripts/provision-python.sh --ft)")
    monkeypatch.setenv("PYTHON_GIL", "1")  # forces the GIL on, as an incompatible extension module would
    cells = [Cell("write", "sqlitefair", 2, 1, 0.1, 1)]
    result = run_benchmark(cells, [interpreters.Interpreter(python)], RunSettings(db_path=str(tmp_path / "b.db")), {})
    (cell,) = result["cells"]
    assert cell["free_threaded_build"] and cell["gil_reenabled"]
    text = report.render(result)
    assert "sqlitefair [GIL ON!]" in text and "PYTHON_GIL=1" in text


# -- what the command says about itself ------------------------------------------


def _bench_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_help_shows_plain_percent_signs(capsys: pytest.CaptureFixture[str]) -> None:
    text = _bench_help(capsys)
    assert "90% reads" in text
    assert "%%" not in text


def test_workload_descriptions_come_from_the_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    from sqlitefair._bench.workloads import WRITE_READS

    assert f"reads {WRITE_READS} rows" in WORKLOADS["write"].description
    mixed = WORKLOADS["mixed"]
    assert f"{1 - mixed.write_share:.0%} reads" in mixed.description and f"{mixed.write_share:.0%} write" in mixed.description
    text = _bench_help(capsys)
    assert main(["bench", "--list"]) == 0
    listed = " ".join(capsys.readouterr().out.split())
    for w in WORKLOADS.values():
        assert w.description in text, w.name
        assert w.description in listed, w.name
    assert "read a row" not in text
    cell = {"workload": "write", "threads": 2, "processes": 1, "duration": 1.0, "repeats": 1}
    assert WORKLOADS["write"].description in report.group_title(cell)
    docs = (Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md").read_text()
    for name, w in WORKLOADS.items():
        assert f"| `{name}` | {w.description} |" in docs


def _run_all_module() -> Any:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "run_all.py"
    spec = importlib.util.spec_from_file_location("_run_all_for_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_micro_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    says = ("insert at 1 thread", "read at 1 thread", "short at 16 threads")
    text = _bench_help(capsys)
    assert main(["bench", "--list"]) == 0
    listed = " ".join(capsys.readouterr().out.split())
    generated = _run_all_module().render_markdown(None, [], "")
    docs = (Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md").read_text()
    for where in (text, listed, generated, docs):
        assert "micro" in where
        assert all(s in where for s in says)
    row = next(line for line in generated.splitlines() if line.startswith("| `micro` |"))
    assert row in docs


def test_insert_runs_on_one_thread_unless_asked() -> None:
    cells = build_plan(PlanOptions(workloads=("insert", "write")))
    assert {(c.workload, c.threads) for c in cells} == {("insert", 1), ("write", 16)}
    asked = PlanOptions(workloads=("insert",), threads=(4,))
    assert {c.threads for c in build_plan(asked)} == {4}  # what the user asked for
    (note,) = plan_notes(asked)
    assert "insert" in note and "4 threads" in note and "--threads" in note
    assert plan_notes(PlanOptions(workloads=("insert",))) == []


def test_header_counts_the_runs_the_progress_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    code = main(["bench", "-d", "0.05", "-t", "1", "-r", "2", "-s", "sqlitefair", "--db", str(tmp_path / "b.db")])
    err = capsys.readouterr().err
    assert code == 0
    header = err.splitlines()[0]
    total = re.search(r"\[1/(\d+)\]", err)
    assert total is not None and total.group(1) == "2"  # one cell, two repeats
    assert re.search(r"= 2 runs\b", header), header


def test_read_scaling_plot_of_a_gil_only_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from sqlitefair._bench import plots

    plt = plots._pyplot()
    kept: list[Any] = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figure to look at it
    cells = [
        {"interpreter": "3.13.15", "workload": "read", "strategy": name, "threads": threads,
         "median": {"read": {"throughput": 1000.0 * threads}}}
        for name in ("stdlib-immediate", "sqlitefair") for threads in (1, 2)
    ]
    result = {"host": {"cpus": 2}, "interpreters": [{"label": "3.13.15", "free_threaded_build": False}], "cells": cells}
    assert plots.plot_read_scaling(result, str(tmp_path))
    (fig,) = kept
    top = fig.axes[0]
    assert "free-threaded" not in top.get_title() and "3.13.15" in top.get_title()
    colours = [line.get_color() for line in top.get_lines()]
    assert len(colours) == 2 and len(set(colours)) == 2
    plt.close(fig)


def test_goals_table_is_about_the_project() -> None:
    target = {"id": "short.throughput", "status": "MISS", "what": "short, 16 threads: throughput vs unfair lock",
              "strategy": "sqlitefair", "interpreter": "3.13.15", "goal": ">= 90%", "figure": "77%", "notes": []}
    text = report.render_targets({"targets": [target]})
    assert text.startswith("project goals (judged on this run)")
    assert "MISS: below the project's goal on this run" in text
    assert "\ngoals" not in "\n" + text


def test_the_harness_uses_only_the_public_api() -> None:
    """The benchmark exercises sqlitefair as users do: no private module or name of the library."""
    import ast
    from pathlib import Path

    import sqlitefair._bench as bench

    offences = []
    for path in sorted(Path(bench.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level >= 2 or (module.startswith("sqlitefair.") and not module.startswith("sqlitefair._bench")):
                    offences.append(f"{path.name}:{node.lineno} from {'.' * node.level}{module} import ...")
                elif module == "sqlitefair" and any(alias.name.startswith("_") for alias in node.names):
                    offences.append(f"{path.name}:{node.lineno} from sqlitefair import a private name")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "sqlitefair" and node.attr.startswith("_") and not node.attr.startswith("__"):
                    offences.append(f"{path.name}:{node.lineno} sqlitefair.{node.attr}")
    assert not offences, offences


def test_no_worker_thread_exits_while_another_is_still_in_a_transaction() -> None:
    """The window's last transactions finish beside workers that have stopped, not beside
    threads tearing down: on a free-threaded build, threads exiting slowed the transactions
    still in flight by tens of milliseconds at 256 threads, a tail of the harness, not of the
    strategy.  Every worker thread is still alive when the slowest one's last transaction ends."""
    import threading
    import time
    import types

    from sqlitefair._bench.runner import drive

    alive_when_the_last_ended: list[int] = []

    class Instance:
        measures_wait = True

        def write(self, index: int, body: Any, rng: Any, worker: int) -> float:
            if index == 0:  # one long transaction, from the start of the window past its end
                time.sleep(0.4)
                alive_when_the_last_ended.append(
                    sum(t.name.startswith("bench-") and t.is_alive() for t in threading.enumerate())
                )
            else:
                time.sleep(0.001)
            return 0.0

        def read(self, index: int, body: Any, rng: Any, worker: int) -> float:  # pragma: no cover - writes only
            raise AssertionError("a write-only workload read")

    workload = types.SimpleNamespace(write_share=1.0, write_body=None, read_body=None)
    result = drive(Instance(), workload, 4, duration=0.1)
    assert result["kinds"]["write"]["ok"] > 4  # (the quick workers ran many transactions meanwhile)
    assert alive_when_the_last_ended == [4]
