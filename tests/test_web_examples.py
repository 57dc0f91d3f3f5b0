"""The example web apps on real servers: gunicorn (gthread) for Flask and Django, uvicorn for Starlette.

Each test starts the server on a free loopback port in its own process group,
sends concurrent requests from threads, always kills the group at the end,
and checks the data: no error in sqlitefair mode, and in both modes a
counter that equals the rows inserted and transfers that keep the total.
No timing is asserted.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
THREADS = 16
REQUESTS_PER_THREAD = 24
ACCOUNTS = 100
READY_TIMEOUT = 30.0

pytestmark = pytest.mark.timeout(120)


def require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install 'sqlitefair[web]')")


@lru_cache(maxsize=None)
def gunicorn_extra_args() -> tuple[str, ...]:
    """gunicorn 24+ opens a control socket in the home folder; two servers at once would share it."""
    out = subprocess.run([sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True, timeout=30).stdout
    return ("--no-control-socket",) if "--no-control-socket" in out else ()


def server_command(app: str, port: int) -> list[str]:
    if app == "flask":
        require("flask", "gunicorn")
        return [
            sys.executable, "-m", "gunicorn", "--chdir", str(EXAMPLES / "flask_app"),
            "--workers", "2", "--worker-class", "gthread", "--threads", "4",
            "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "3", *gunicorn_extra_args(), "app:app",
        ]
    if app == "django":
        require("django", "gunicorn")
        return [
            sys.executable, "-m", "gunicorn", "--chdir", str(EXAMPLES / "django_app"),
            "--workers", "2", "--worker-class", "gthread", "--threads", "4",
            "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "3", *gunicorn_extra_args(),
            "exampleproject.wsgi:application",
        ]
    require("starlette", "uvicorn")
    return [
        # serve.py: uvicorn's command line, with TCP_NODELAY kept on for --workers (see the file).
        sys.executable, str(EXAMPLES / "starlette_app" / "serve.py"), "--app-dir", str(EXAMPLES / "starlette_app"),
        "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning", "app:app",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {"Connection": "close"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


@contextlib.contextmanager
def serve(app: str, mode: str, folder: Path) -> Iterator[int]:
    port = free_port()
    command = server_command(app, port)
    env = {**os.environ, "EXAMPLE_DB": str(folder / f"{app}-{mode}.db"), "EXAMPLE_DB_MODE": mode}
    log_path = folder / f"{app}-{mode}.log"
    if app == "django":  # the schema and the seed data, as a deployment would make them
        for step in (["migrate", "--noinput", "-v", "0"], ["seed"]):
            subprocess.run([sys.executable, "manage.py", *step], cwd=EXAMPLES / "django_app", env=env, check=True, timeout=60)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{app} server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
            try:
                status, body = request(port, "GET", "/health")
                if status == 200 and body["mode"] == mode:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{app} server not ready after {READY_TIMEOUT} s:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


def client(port: int, seed: int) -> list[tuple[str, int, Any]]:
    """One thread's mix: reads, read-then-write POSTs and transfers; returns (kind, status, body)."""
    rng = random.Random(seed)
    results = []
    for i in range(REQUESTS_PER_THREAD):
        kind = ("create", "transfer", "get", "list")[i % 4]
        if kind == "create":
            status, body = request(port, "POST", "/items", {"name": f"t{seed}-{i}"})
        elif kind == "transfer":
            src, dst = rng.sample(range(1, ACCOUNTS + 1), 2)
            status, body = request(port, "POST", "/transfer", {"from": src, "to": dst, "amount": rng.randint(1, 50)})
        elif kind == "get":
            status, body = request(port, "GET", f"/items/{rng.randint(1, 1000)}")
        else:
            status, body = request(port, "GET", "/items?limit=5")
        results.append((kind, status, body))
    return results


def hammer(port: int) -> list[tuple[str, int, Any]]:
    with ThreadPoolExecutor(THREADS) as pool:
        return [r for rs in pool.map(lambda s: client(port, s), range(THREADS)) for r in rs]


def check_consistent(port: int, results: list[tuple[str, int, Any]]) -> None:
    created = [body for kind, status, body in results if kind == "create" and status == 201]
    transfers = [body for kind, status, body in results if kind == "transfer" and status == 200]
    status, stats = request(port, "GET", "/stats")
    assert status == 200
    seqs = [body["seq"] for body in created]
    assert len(set(seqs)) == len(seqs)  # no two requests read the same counter value
    assert stats["items"] == stats["seed_items"] + len(created)
    assert stats["counter"] == stats["items"] == stats["distinct_seq"] == stats["max_seq"]
    assert stats["total_balance"] == stats["start_balance"]  # money is neither made nor lost
    assert stats["transfers"] == len(transfers)
    # A row written through one worker process is read back (possibly through the other).
    for body in created[:5]:
        status, item = request(port, "GET", f"/items/{body['id']}")
        assert status == 200 and item["seq"] == body["seq"]


@pytest.mark.parametrize(
    ("app", "mode"),
    [("flask", "sqlitefair"), ("flask", "sqlitefair-write"), ("starlette", "sqlitefair"), ("starlette", "sqlitefair-write"),
     ("django", "sqlitefair")],
)
def test_sqlitefair_mode_serves_concurrent_requests_without_errors(app: str, mode: str, tmp_path: Path) -> None:
    with serve(app, mode, tmp_path) as port:
        results = hammer(port)
        errors = [(kind, status, body) for kind, status, body in results if status not in (200, 201)]
        assert errors == []
        assert len(results) == THREADS * REQUESTS_PER_THREAD
        check_consistent(port, results)


@pytest.mark.parametrize(("app", "mode"), [("flask", "plain"), ("starlette", "plain"), ("django", "plain"), ("django", "immediate")])
def test_plain_mode_runs_and_keeps_data_consistent(app: str, mode: str, tmp_path: Path) -> None:
    """The baselines may refuse writes ("database is locked", 503) but must not corrupt anything."""
    with serve(app, mode, tmp_path) as port:
        results = hammer(port)
        unexpected = [(k, s, b) for k, s, b in results if s not in (200, 201) and not (s == 503 and k in ("create", "transfer"))]
        assert unexpected == []
        check_consistent(port, results)
