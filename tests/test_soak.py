"""The soak benchmark's harness, on a few seconds of load (the real run takes minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def run_soak(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SOAK), *args], capture_output=True, text=True, timeout=120)


def test_short_soak_checks_its_invariants(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = run_soak("--minutes", "0.05", "--processes", "2", "--threads", "2", "--json", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())["summary"]
    assert summary["errors"] == 0 and summary["lost_writes"] == 0 and summary["integrity"] == "ok"
    assert summary["writes"] > 0 and summary["reads"] > summary["writes"]
    assert "soak: OK" in done.stderr


def test_bad_arguments_are_refused() -> None:
    done = run_soak("--minutes", "0")
    assert done.returncode == 2 and "--minutes must be > 0" in done.stderr


def test_short_soak_with_litestream_restores_and_checks_the_replica(tmp_path: Path) -> None:
    from sqlitefair.integrations.litestream import LitestreamError, find_litestream

    try:
        find_litestream()
    except LitestreamError as exc:
        pytest.skip(f"the litestream binary is not usable here: {exc}")
    out = tmp_path / "soak.json"
    done = run_soak("--minutes", "0.05", "--processes", "2", "--threads", "2", "--litestream", "--json", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())["summary"]
    replica = summary["litestream"]
    assert replica["ok"] and replica["integrity"] == "ok" and replica["restored_rows"] == summary["rows"]
    assert replica["log_warnings_and_errors"] == [] and summary["lost_writes"] == 0
