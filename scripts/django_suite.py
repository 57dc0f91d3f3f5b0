"""Run the backend-related parts of Django's own test suite twice, with Django's sqlite3 backend and
with ``sqlitefair.django``, and list every test whose outcome differs.

Usage (scripts/django-tests sets it up): ``python scripts/django_suite.py DJANGO_SOURCE_DIR [--files] [APP ...]``
where DJANGO_SOURCE_DIR is an unpacked source distribution of the installed Django version (it
carries ``tests/`` and ``tests/runtests.py``).  Exits 1 if a test passes with Django's backend and
not with sqlitefair's, unless it is listed in ``EXPECTED`` with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The apps of Django's test suite that concern a database backend.
APPS = ["backends", "transactions", "transaction_hooks", "select_for_update", "migrations", "basic", "model_fields"]

#: Tests whose outcome differs on purpose: test id -> why.
EXPECTED: dict[str, str] = {
    "backends.base.test_base.DatabaseWrapperLoggingTests.test_commit_debug_log":
        "the logged BEGIN is BEGIN IMMEDIATE (every writing transaction begins IMMEDIATE), not BEGIN",
    "backends.sqlite.tests.TestTransactionMode.test_default_transaction_mode":
        "the default BEGIN is BEGIN IMMEDIATE, not BEGIN",
    "backends.sqlite.tests.TestTransactionMode.test_valid_transaction_modes":
        "transaction_mode DEFERRED and EXCLUSIVE are refused with ImproperlyConfigured (IMMEDIATE passes)",
}

SETTINGS = """\
DATABASES = {{
    "default": {{"ENGINE": {engine!r}, "NAME": "default.db", "TEST": {{"NAME": {default_test!r}}}}},
    "other": {{"ENGINE": {engine!r}, "NAME": "other.db", "TEST": {{"NAME": {other_test!r}}}}},
}}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
"""

#: A test's first line in runtests.py -v 2 output: "test_name (module.Class.test_name)" (a subtest's
#: adds its parameters); its outcome follows " ... " on that line or, after a docstring line, the next.
_TEST = re.compile(r"^\s*(\w+) \(([\w.]+)\)( \(.*?\))?")
_OUTCOME = re.compile(r" \.\.\. (ok|FAIL|ERROR|skipped.*|expected failure|unexpected success)$")


def parse(text: str) -> dict[str, str]:
    """{test id: outcome} from runtests.py -v 2 output."""
    results: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        test = _TEST.match(line)
        if test:
            current = test.group(2) + (test.group(3) or "")
        outcome = _OUTCOME.search(line)
        if outcome and current is not None:
            results[current] = "skipped" if outcome.group(1).startswith("skipped") else outcome.group(1)
            current = None
    return results


def run(source: Path, engine: str, apps: list[str], out: Path, files: bool) -> dict[str, str]:
    """Run runtests.py with ``engine`` (test databases in memory, as Django's own settings have
    them, or with ``files`` in database files: WAL, the cross-process queue); return {test id: outcome}."""
    settings_dir = Path(tempfile.mkdtemp(prefix="django-settings-"))
    tests = (str(settings_dir / "test_default.db"), str(settings_dir / "test_other.db")) if files else ("", "")
    (settings_dir / "sqlitefair_suite_settings.py").write_text(
        SETTINGS.format(engine=engine, default_test=tests[0] or None, other_test=tests[1] or None)
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(settings_dir), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "runtests.py", "--settings=sqlitefair_suite_settings", "--parallel=1", "-v", "2", *apps]
    started = time.monotonic()
    print(f"== {engine}, test databases {'in files' if files else 'in memory'}: {' '.join(apps)}", file=sys.stderr, flush=True)
    with open(out, "w") as log:
        proc = subprocess.run(cmd, cwd=source / "tests", env=env, stdout=log, stderr=subprocess.STDOUT)
    text = out.read_text()
    results = parse(text)
    summary = re.findall(r"^(Ran \d+ tests? in .*|OK.*|FAILED.*)$", text, re.M)
    print(f"   {len(results)} results, exit {proc.returncode}, {time.monotonic() - started:.0f} s; {' '.join(summary)}; log: {out}", file=sys.stderr)
    return results


def main() -> int:
    args = sys.argv[1:]
    files = "--files" in args
    args = [a for a in args if a != "--files"]
    source = Path(args[0]).resolve()
    apps = args[1:] or APPS
    logs = Path(tempfile.mkdtemp(prefix="django-suite-"))
    django_results = run(source, "django.db.backends.sqlite3", apps, logs / "django-sqlite3.log", files)
    ours = run(source, "sqlitefair.django", apps, logs / "sqlitefair.log", files)
    if not django_results or not ours:
        print("no test results were parsed: see the logs", file=sys.stderr)
        return 1
    worse, other = [], []
    for test in sorted(set(django_results) | set(ours)):
        a, b = django_results.get(test, "missing"), ours.get(test, "missing")
        if a == b:
            continue
        (worse if a == "ok" and b in ("FAIL", "ERROR", "missing") else other).append((test, a, b))
    print(f"\n{len(django_results)} tests with Django's sqlite3 backend, {len(ours)} with sqlitefair.django")
    passed = sum(1 for v in ours.values() if v == "ok")
    print(f"sqlitefair.django: {passed} ok, {sum(1 for v in ours.values() if v in ('FAIL', 'ERROR'))} failed or errors, "
          f"{sum(1 for v in ours.values() if v == 'skipped')} skipped")
    unexplained = [t for t in worse if t[0] not in EXPECTED]
    for title, items in (("passes with Django's backend, not with sqlitefair's", worse), ("other differences", other)):
        print(f"\n{title}: {len(items)}")
        for test, a, b in items:
            why = EXPECTED.get(test)
            print(f"  {test}: {a} -> {b}" + (f"  (expected: {why})" if why else ""))
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
