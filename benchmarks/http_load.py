"""HTTP load benchmark: the example web apps on real servers, plain sqlite3 vs sqlitefair.

    python benchmarks/http_load.py                       # full run (about 10 minutes), writes docs/http-load.md
    python benchmarks/http_load.py --quick --docs ''     # smoke run, prints the table only
    python benchmarks/http_load.py --apps flask --concurrency 1,8,32 --duration 3 --repeats 1

For each app (Flask on gunicorn gthread, 2 workers x 8 threads; Starlette on
uvicorn, 2 workers) and each mode (``plain``: a stdlib ``sqlite3`` connection
per request with deferred transactions, the way tutorials write it;
``sqlitefair``: writes in ``pool.transaction()``; ``sqlitefair-write``: writes
through ``pool.write(fn)``), it starts the server on a free loopback port with a fresh
database, drives it with ``wrk`` at each concurrency for ``--duration``
seconds, and stops it.  The request mix (a wrk Lua script): 80 % reads
(``GET /items/{id}``, ``GET /items?limit=20``), 20 % read-then-write POSTs
(``POST /items``, ``POST /transfer``).  Every non-2xx answer and every socket
error counts as an error.  Repeats restart the servers and the figures are
medians over repeats.  Afterwards each server's data is checked (counter equals
rows, transfers keep the total).

Needs ``wrk`` (Debian/Ubuntu: ``apt-get install wrk``; macOS: ``brew install
wrk``) and ``pip install 'sqlitefair[web]'``.  Only loopback traffic; every
run is bounded by ``--duration`` and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs" / "http-load.md"
START_MARK = "<!-- http-load results: start (written by benchmarks/http_load.py) -->"
END_MARK = "<!-- http-load results: end -->"
APPS = ("flask", "starlette", "django")
MODES = ("plain", "sqlitefair", "sqlitefair-write")
#: Also accepted by --modes: the pool with the cross-process queue off (process_queue=False).
EXTRA_MODES = ("sqlitefair-noqueue",)
#: The modes each app has (examples/django_app: Django's defaults, Django's IMMEDIATE mode, and
#: ENGINE "sqlitefair.django"); --modes picks among them.
APP_MODES = {
    "flask": MODES + EXTRA_MODES,
    "starlette": MODES + EXTRA_MODES,
    "django": ("plain", "immediate", "sqlitefair"),
}
DEFAULT_MODES = {"flask": MODES, "starlette": MODES, "django": APP_MODES["django"]}
WORKERS = 2


def server_label(app: str, workers: int = WORKERS) -> str:
    if app == "django":
        return f"Django (examples/django_app) on gunicorn (gthread, {workers} workers x 8 threads)"
    if app == "flask":
        return f"Flask on gunicorn (gthread, {workers} workers x 8 threads)"
    return f"Starlette on uvicorn ({workers} workers)"

WRK_SCRIPT = r"""
-- The request mix; wrk runs one copy of this per thread.
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  write_ratio = tonumber(args[1]) or 0.2
  math.randomseed(tid * 7919 + os.time())
  ok = 0
  bad = 0
  writes = 0
end

local json = {["Content-Type"] = "application/json"}

function request()
  local r = math.random()
  if r < write_ratio / 2 then
    writes = writes + 1
    return wrk.format("POST", "/items", json, '{"name": "bench"}')
  elseif r < write_ratio then
    writes = writes + 1
    local a = math.random(1, 100)
    local b = math.random(1, 99)
    if b >= a then b = b + 1 end
    return wrk.format("POST", "/transfer", json,
      string.format('{"from": %d, "to": %d, "amount": %d}', a, b, math.random(1, 5)))
  elseif r < write_ratio + (1 - write_ratio) * 0.625 then
    return wrk.format("GET", "/items/" .. math.random(1, 1000))
  else
    return wrk.format("GET", "/items?limit=20")
  end
end

function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local n_ok, n_bad, n_writes = 0, 0, 0
  for _, t in ipairs(threads) do
    n_ok = n_ok + t:get("ok")
    n_bad = n_bad + t:get("bad")
    n_writes = n_writes + t:get("writes")
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "ok": %d, "non2xx": %d, "writes_sent": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, n_ok, n_bad, n_writes,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def server_command(python: str, app: str, port: int, workers: int = WORKERS) -> list[str]:
    if app in ("flask", "django"):
        help_text = subprocess.run([python, "-m", "gunicorn", "--help"], capture_output=True, text=True, timeout=60).stdout
        extra = ["--no-control-socket"] if "--no-control-socket" in help_text else []
        folder, target = ("flask_app", "app:app") if app == "flask" else ("django_app", "exampleproject.wsgi:application")
        return [
            python, "-m", "gunicorn", "--chdir", str(EXAMPLES / folder),
            "--workers", str(workers), "--worker-class", "gthread", "--threads", "8",
            "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "3", "--log-level", "warning", *extra, target,
        ]
    return [
        # serve.py: uvicorn's command line, with TCP_NODELAY kept on for --workers (see the file).
        python, str(EXAMPLES / "starlette_app" / "serve.py"), "--app-dir", str(EXAMPLES / "starlette_app"),
        "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning", "app:app",
    ]


@contextlib.contextmanager
def running_server(
    python: str, app: str, mode: str, folder: Path, workers: int = WORKERS
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Start one server in its own process group; yield (port, its /health answer); always stop it."""
    port = free_port()
    env = {**os.environ, "EXAMPLE_DB": str(folder / f"{app}-{mode}.db"), "EXAMPLE_DB_MODE": mode}
    log_path = folder / f"{app}-{mode}.log"
    if app == "django":  # the schema and the seed data first, as a deployment makes them
        for step in (["migrate", "--noinput", "-v", "0"], ["seed"]):
            subprocess.run([python, "manage.py", *step], cwd=EXAMPLES / "django_app", env=env, check=True, timeout=120)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            server_command(python, app, port, workers), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{app} ({mode}) exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
            try:
                status, health = get_json(port, "/health")
                if status == 200 and health.get("mode") == mode:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{app} ({mode}) not ready after 60 s; see {log_path}")
            time.sleep(0.1)
        yield port, health
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(20)


def run_wrk(port: int, script: Path, concurrency: int, duration: int, write_ratio: float) -> dict[str, Any]:
    command = [
        "wrk", "-t", str(min(concurrency, 2)), "-c", str(concurrency), "-d", f"{duration}s",
        "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}", "--", str(write_ratio),
    ]
    load_before = os.getloadavg()[0]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    match = re.search(r"^RESULT (\{.*\})$", out.stdout, re.M)
    if out.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    errors = raw["non2xx"] + raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    attempts = max(raw["requests"] + raw["connect_errors"] + raw["write_errors"] + raw["timeouts"], 1)
    return {
        "concurrency": concurrency,
        "requests": raw["requests"],
        "rps": raw["requests"] / seconds,
        "ok_rps": raw["ok"] / seconds,
        "errors": errors,
        "error_pct": 100.0 * errors / attempts,
        "writes_sent": raw["writes_sent"],
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "loadavg_1m_before": load_before,
        "raw": raw,
    }


def check_data(port: int) -> dict[str, Any]:
    status, stats = get_json(port, "/stats")
    consistent = (
        status == 200
        and stats["counter"] == stats["items"] == stats["distinct_seq"] == stats["max_seq"]
        and stats["total_balance"] == stats["start_balance"]
    )
    return {"consistent": consistent, **(stats if isinstance(stats, dict) else {})}


def server_packages(python: str) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for name in ('flask', 'gunicorn', 'starlette', 'uvicorn', 'django', 'sqlitefair'):\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def median_cells(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["app"], run["mode"], run["concurrency"]), []).append(run)
    summary = []
    for (app, mode, concurrency), group in cells.items():
        row: dict[str, Any] = {"app": app, "mode": mode, "concurrency": concurrency, "repeats": len(group)}
        for key in ("rps", "ok_rps", "error_pct", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
            row[key] = statistics.median(r[key] for r in group)
        row["errors_total"] = sum(r["errors"] for r in group)
        row["requests_total"] = sum(r["requests"] for r in group)
        summary.append(row)
    return summary


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    cfg = result["config"]
    lines = [
        f"Measured {env['date']} on {env['cpus']} CPUs ({env['platform']}), {env['python']} "
        f"(GIL {'enabled' if env['gil_enabled'] else 'disabled'}), SQLite {env['sqlite']}, "
        f"{env['wrk']}; packages: {', '.join(f'{k} {v}' for k, v in env['packages'].items())}.",
        f"Load average (1 min) before the cells: median {env['loadavg_median']:.2f}, max {env['loadavg_max']:.2f}"
        " (it counts the server's processes and wrk, which share the 2 cores; other work on the machine, if any, too).",
        f"Each cell: {cfg['duration']:g} s of wrk at that many connections, median of {cfg['repeats']} repeat(s) "
        f"(servers restarted with a fresh database per repeat); {100 * cfg['write_ratio']:.0f} % read-then-write POSTs, "
        "the rest reads. Errors: non-2xx answers and socket errors, as a share of all requests. "
        "Latency over all requests, failed ones included (plain's failures are fast).",
        "",
    ]
    summary = {(r["app"], r["mode"], r["concurrency"]): r for r in result["summary"]}
    for app in cfg["apps"]:
        lines += [f"**{server_label(app, cfg.get('workers', WORKERS))}**", ""]
        header = "| connections |"
        rule = "|---:|"
        app_modes = [m for m in cfg["modes"] if (app, m, cfg["concurrency"][0]) in summary]
        for mode in app_modes:
            header += f" {mode}: req/s | {mode}: errors | {mode}: p50 / p95 / p99 ms |"
            rule += "---:|---:|---:|"
        lines += [header, rule]
        for concurrency in cfg["concurrency"]:
            line = f"| {concurrency} |"
            for mode in app_modes:
                r = summary.get((app, mode, concurrency))
                if r is None:
                    line += " – | – | – |"
                    continue
                line += (
                    f" {r['rps']:.0f} | {r['error_pct']:.1f} % | "
                    f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f} / {r['p99_ms']:.1f} |"
                )
            lines.append(line)
        checks = [c for c in result["data_checks"] if c["app"] == app]
        bad = [c for c in checks if not c["consistent"]]
        lines += ["", f"Data checks after each server run: {len(checks) - len(bad)} of {len(checks)} consistent "
                  "(counter equals rows, transfers keep the total).", ""]
    lines += [
        "<details><summary>Raw figures (JSON, medians per cell)</summary>",
        "",
        "```json",
        json.dumps({"environment": env, "config": cfg, "summary": result["summary"]}, indent=1),
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines)


def write_docs(path: Path, text: str) -> None:
    block = f"{START_MARK}\n{text}\n{END_MARK}"
    if path.exists():
        current = path.read_text()
        if START_MARK in current and END_MARK in current:
            head, rest = current.split(START_MARK, 1)
            _, tail = rest.split(END_MARK, 1)
            path.write_text(head + block + tail)
            return
        path.write_text(current.rstrip("\n") + "\n\n" + block + "\n")
        return
    path.write_text("# HTTP load\n\n" + block + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", default="flask,starlette", help="comma-separated: flask,starlette,django")
    parser.add_argument("--modes", default="",
                        help="comma-separated, among each app's: plain,sqlitefair,sqlitefair-write (also: sqlitefair-noqueue, "
                        "the pool without the cross-process queue) for Flask and Starlette; plain,immediate,sqlitefair for "
                        "Django (default: each app's comparison set)")
    parser.add_argument("--workers", type=int, default=WORKERS, help=f"server worker processes (default {WORKERS})")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32", help="connections per cell, comma-separated")
    parser.add_argument("--duration", type=int, default=5, help="whole seconds per cell (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell, median reported (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="whole seconds of load before the cells of each server (0: none)")
    parser.add_argument("--write-ratio", type=float, default=0.2, help="share of read-then-write POSTs (default 0.2)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the servers")
    parser.add_argument("--json", default="", help="also write every run's figures to this JSON file")
    parser.add_argument("--docs", default=str(DOCS), help="markdown file to put the table in ('' to only print)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 s cells at 1 and 8 connections, 1 repeat, no warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.duration, args.repeats, args.warmup = "1,8", 1, 1, 0
    apps = [a for a in args.apps.split(",") if a]
    asked = [m for m in args.modes.split(",") if m]
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    if not set(apps) <= set(APPS) or not set(asked) <= {m for a in apps for m in APP_MODES[a]} or min(concurrency) < 1 or args.workers < 1:
        parser.error("unknown app or mode (for the apps asked), or a concurrency or worker count below 1")
    modes_of = {a: [m for m in (asked or DEFAULT_MODES[a]) if m in APP_MODES[a]] for a in apps}
    modes = list(dict.fromkeys(m for a in apps for m in modes_of[a]))
    if not 0 <= args.write_ratio <= 1 or args.duration <= 0 or args.repeats < 1:
        parser.error("bad --write-ratio, --duration or --repeats")
    if shutil.which("wrk") is None:
        print("wrk not found: install it (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk)", file=sys.stderr)
        return 2
    packages = server_packages(args.python)
    needed = {"flask": ("flask", "gunicorn"), "starlette": ("starlette", "uvicorn"), "django": ("django", "gunicorn")}
    missing = sorted({p for a in apps for p in needed[a] if p not in packages})
    if missing:
        print(f"{', '.join(missing)} missing for {args.python}: pip install 'sqlitefair[web,django]'", file=sys.stderr)
        return 2
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    wrk_version = " ".join(wrk_version.split()[:2])
    total = sum(len(modes_of[a]) for a in apps) * args.repeats * (len(concurrency) * args.duration + args.warmup + 4)
    print(f"about {total / 60:.0f} min: {apps} x {modes} x {concurrency} connections x {args.repeats} repeat(s)", file=sys.stderr)

    runs: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    health: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sqlitefair-http-load-") as tmp:
        folder = Path(tmp)
        script = folder / "mix.lua"
        script.write_text(WRK_SCRIPT)
        for repeat in range(args.repeats):
            for app in apps:
                for mode in modes_of[app]:
                    run_dir = folder / f"{repeat}-{app}-{mode}"
                    run_dir.mkdir()
                    with running_server(args.python, app, mode, run_dir, args.workers) as (port, health):
                        if args.warmup > 0:
                            run_wrk(port, script, 4, args.warmup, args.write_ratio)
                        for c in concurrency:
                            cell = run_wrk(port, script, c, args.duration, args.write_ratio)
                            cell.update(app=app, mode=mode, repeat=repeat)
                            runs.append(cell)
                            print(
                                f"{app:9} {mode:10} c={c:<3} {cell['rps']:8.0f} req/s  errors {cell['error_pct']:5.1f} %  "
                                f"p50 {cell['p50_ms']:7.1f}  p95 {cell['p95_ms']:7.1f}  p99 {cell['p99_ms']:7.1f} ms  "
                                f"load {cell['loadavg_1m_before']:.2f}",
                                file=sys.stderr,
                                flush=True,
                            )
                        check = check_data(port)
                        check.update(app=app, mode=mode, repeat=repeat)
                        checks.append(check)
                        if not check["consistent"]:
                            print(f"DATA CHECK FAILED for {app} {mode}: {check}", file=sys.stderr)

    loads = [r["loadavg_1m_before"] for r in runs]
    result = {
        "environment": {
            "date": datetime.date.today().isoformat(),
            "python": f"{platform.python_implementation()} {health.get('python', '?')}",
            "gil_enabled": health.get("gil"),
            "sqlite": health.get("sqlite"),
            "cpus": os.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}",
            "wrk": wrk_version,
            "packages": packages,
            "loadavg_median": statistics.median(loads),
            "loadavg_max": max(loads),
        },
        "config": {
            "apps": apps,
            "modes": modes,
            "workers": args.workers,
            "concurrency": concurrency,
            "duration": args.duration,
            "repeats": args.repeats,
            "write_ratio": args.write_ratio,
            "servers": {app: server_label(app, args.workers) for app in apps},
        },
        "summary": median_cells(runs),
        "data_checks": checks,
    }
    text = markdown(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "runs": runs}, indent=1) + "\n")
    if args.docs:
        write_docs(Path(args.docs), text)
        print(f"wrote {args.docs}", file=sys.stderr)
    return 0 if all(c["consistent"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
