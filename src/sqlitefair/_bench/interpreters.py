"""Other Python interpreters to run the benchmark in: finding them and probing them.

Cells always run in child processes (``python -m sqlitefair bench
--worker``), so one invocation can compare a GIL build with a free-threaded
build of the same version.  The child must import *this* sqlitefair, so its
folder goes first on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ("Interpreter", "discover", "probe", "child_environment", "PROTOCOL_PREFIX")

#: Lines a child prints for the parent start with this; anything else on its stdout is noise.
PROTOCOL_PREFIX = "@sqlitefair-bench "
#: The versions looked up with ``uv python find`` by ``--python auto``.
UV_REQUESTS = ("3.14", "3.14t")


@dataclass
class Interpreter:
    """One interpreter to run cells in, with what its probe found out."""

    path: str
    label: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    #: Strategy name -> ``None`` if usable, else why it is skipped.
    strategies: dict[str, str | None] = field(default_factory=dict)
    found_by: str = "command line"

    @property
    def free_threaded(self) -> bool:
        return bool(self.facts.get("free_threaded_build"))

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "found_by": self.found_by, **self.facts, "strategies": self.strategies}


def _package_parent() -> Path:
    return Path(__file__).resolve().parent.parent.parent


def repo_root() -> Path | None:
    """The source checkout this sqlitefair runs from (``src`` layout), if it is one."""
    parent = _package_parent()
    if parent.name == "src" and (parent.parent / "pyproject.toml").exists():
        return parent.parent
    return None


def child_environment(shim_dir: str | None = None) -> dict[str, str]:
    """Environment for a child interpreter that must import this very sqlitefair.

    From a source checkout, the repository's ``src`` goes first on
    ``PYTHONPATH``.  From an installed copy, putting all of site-packages on
    another interpreter's path would load extension modules built for the
    wrong Python, so ``shim_dir`` (a temporary folder) gets a link to the
    package alone.
    """
    env = dict(os.environ)
    parent = _package_parent()
    if parent.name != "src" and shim_dir is not None:
        link = Path(shim_dir) / "sqlitefair"
        if not link.exists():
            try:
                link.symlink_to(parent / "sqlitefair", target_is_directory=True)
            except OSError:
                shutil.copytree(parent / "sqlitefair", link, ignore=shutil.ignore_patterns("__pycache__"))
        parent = Path(shim_dir)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(parent) + (os.pathsep + old if old else "")
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _run_quietly(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def discover(log: Any = None) -> list[Interpreter]:
    """Interpreters for ``--python auto``: uv's 3.14 and 3.14t, and the provisioned ones.

    ``uv python find`` is used only where ``uv`` is installed; the project's
    ``scripts/provision-python.sh --print`` (in a source checkout) prints
    ``gil PATH`` / ``ft PATH`` lines for interpreters it already built, and
    exits non-zero when one of them is missing, which is fine here.
    """
    found: list[Interpreter] = []
    seen: set[str] = set()

    def add(path: str, how: str) -> None:
        path = path.strip()
        if not path or not os.path.exists(path):
            return
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.append(Interpreter(path, found_by=how))

    uv = shutil.which("uv")
    if uv:
        for request in UV_REQUESTS:
            out = _run_quietly([uv, "python", "find", request])
            if out is not None and out.returncode == 0:
                add(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "", f"uv python find {request}")
            elif log:
                log(f"uv python find {request}: not found")
    elif log:
        log("uv is not installed: skipping uv python find 3.14 / 3.14t")
    root = repo_root()
    script = root / "scripts" / "provision-python.sh" if root else None
    if script is not None and script.exists():
        out = _run_quietly(["bash", str(script), "--print"])
        if out is not None:
            for line in out.stdout.splitlines():
                kind, _, path = line.strip().partition(" ")
                if kind in ("gil", "ft"):
                    add(path, f"provision-python.sh ({kind})")
            if log and out.returncode != 0 and out.stderr.strip():
                log(f"provision-python.sh --print: {out.stderr.strip().splitlines()[-1]}")
    elif log:
        log("no scripts/provision-python.sh here (not a source checkout): skipping it")
    return found


def probe(interpreter: Interpreter, env: dict[str, str], timeout: float = 60.0) -> str | None:
    """Ask ``interpreter`` for its facts and usable strategies; ``None`` on success, else why not."""
    argv = [interpreter.path, "-m", "sqlitefair", "bench", "--probe"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not run {interpreter.path}: {exc}"
    for line in out.stdout.splitlines():
        if line.startswith(PROTOCOL_PREFIX):
            data = json.loads(line[len(PROTOCOL_PREFIX) :])
            interpreter.strategies = data.pop("strategies")
            interpreter.facts = data
            return None
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return f"{interpreter.path} cannot run the benchmark (exit {out.returncode}): {tail}"


def probe_here() -> dict[str, Any]:
    """What ``--probe`` prints: this interpreter's facts and which strategies it can run."""
    from . import environment
    from .strategies import STRATEGIES

    facts = environment.interpreter_facts()
    strategies: dict[str, str | None] = {}
    modules: dict[str, str | None] = {}
    for name, strategy in STRATEGIES.items():
        module = strategy.backend_module
        if module not in modules:
            gil, error = environment.gil_after_import(module)
            if error is None:  # only an import that happened can have switched the GIL on
                facts[f"gil_enabled_after_import_{module}"] = gil
            modules[module] = error
        reason = modules[module] or strategy.unavailable()
        strategies[name] = reason
    if modules.get("apsw") is None:
        try:
            import apsw

            facts["apsw_version"] = apsw.apsw_version()
            facts["apsw_sqlite_version"] = apsw.sqlite_lib_version()
        except Exception:  # pragma: no cover - import just worked
            pass
    facts["strategies"] = strategies
    return facts


def make_label(facts: dict[str, Any], taken: set[str]) -> str:
    """A short unique name: ``3.11.7``, ``3.14.0t``; ``3.14.0t#2`` for a second one."""
    base = str(facts.get("python_version", "?")) + ("t" if facts.get("free_threaded_build") else "")
    label, n = base, 2
    while label in taken:
        label, n = f"{base}#{n}", n + 1
    taken.add(label)
    return label


def current() -> Interpreter:
    return Interpreter(sys.executable, found_by="this interpreter")
