"""Facts about the machine and interpreter that a benchmark figure depends on.

Every result records them, because a number without them cannot be compared:
a free-threaded build whose GIL got switched back on by an extension module
is a GIL build in disguise, a database on tmpfs never touches a disk, and two
CPUs cannot show an eight-thread speed-up.
"""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys
import sysconfig
from typing import Any

__all__ = (
    "free_threaded_build",
    "gil_enabled",
    "interpreter_facts",
    "gil_after_import",
    "filesystem_type",
    "cpu_count",
    "host_facts",
    "gil_reenabled",
)


def free_threaded_build() -> bool:
    """Whether this interpreter was built with ``--disable-gil`` (3.13t, 3.14t)."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled() -> bool:
    """Whether the GIL is on right now (always True before 3.13 and on GIL builds)."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def gil_after_import(module: str) -> tuple[bool, str | None]:
    """Import ``module`` (a SQLite binding) and report whether the GIL is on afterwards.

    On a free-threaded build, importing an extension module that does not
    declare free-threading support switches the GIL back on for the whole
    process; this is where that shows.  Returns ``(gil_enabled, error)``.
    """
    try:
        importlib.import_module(module)
    except Exception as exc:  # an absent optional binding is a fact, not a crash
        return gil_enabled(), f"{type(exc).__name__}: {exc}"
    return gil_enabled(), None


def cpu_count() -> int:
    """CPUs this process may run on (affinity and cgroup-free count where available)."""
    counter = getattr(os, "process_cpu_count", None)
    if counter is not None:
        return counter() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def filesystem_type(folder: str) -> str:
    """File system type of ``folder`` (``ext4``, ``tmpfs``, ``apfs``...), or ``"unknown"``.

    Uses the longest matching mount point in ``/proc/mounts`` on Linux, else
    ``stat -f`` (GNU coreutils), else ``"unknown"``.
    """
    folder = os.path.realpath(folder)
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as mounts:
            best, kind = "", ""
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount_point = fields[1].replace("\\040", " ")
                inside = folder == mount_point or folder.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, kind = mount_point, fields[2]
            if kind:
                return kind
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", folder], capture_output=True, text=True, timeout=5, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def interpreter_facts() -> dict[str, Any]:
    """Version, build and binding facts of the running interpreter (JSON-ready)."""
    import sqlite3

    facts: dict[str, Any] = {
        "python_version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": os.path.basename(sys.executable),
        "free_threaded_build": free_threaded_build(),
        "gil_enabled_at_start": gil_enabled(),
        "sqlite_version": sqlite3.sqlite_version,
        "python_gil_env": os.environ.get("PYTHON_GIL"),
    }
    try:
        import sqlitefair

        facts["sqlitefair_version"] = sqlitefair.__version__
    except Exception as exc:  # pragma: no cover - the probe needs sqlitefair anyway
        facts["sqlitefair_version"] = f"unavailable: {exc}"
    return facts


def host_facts(db_folder: str) -> dict[str, Any]:
    """CPU count, OS, load and the file system the database lives on."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "cpus": cpu_count(),
        "cpus_total": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "load_average": load,
        "fs_type": filesystem_type(db_folder),
    }


def gil_reenabled(facts: dict[str, Any]) -> bool:
    """Whether a result claims a free-threaded build but ran with the GIL on.

    ``facts`` needs ``free_threaded_build`` and at least one of
    ``gil_enabled`` / ``gil_enabled_after_import`` / ``gil_enabled_at_end``.
    Such a run measured a GIL interpreter and must be flagged, not reported as
    free-threaded.
    """
    if not facts.get("free_threaded_build"):
        return False
    keys = ("gil_enabled", "gil_enabled_after_import", "gil_enabled_at_end")
    return any(bool(facts.get(key)) for key in keys)
