"""Settings of the example project: the database backend is chosen by EXAMPLE_DB_MODE.

* ``sqlitefair`` (default): ``"ENGINE": "sqlitefair.django"``: every writing transaction waits
  in sqlitefair's FIFO writer line (threads and worker processes), then ``BEGIN IMMEDIATE``;
  reads in parallel; WAL and sqlitefair's other pragmas.
* ``immediate``: Django's own SQLite backend with ``"transaction_mode": "IMMEDIATE"`` (Django
  5.1+) and sqlitefair's pragmas set by ``init_command``: docs/web.md's settings for Django's
  backend; writers wait in SQLite's busy handler.
* ``plain``: Django's own SQLite backend with its defaults (deferred transactions,
  rollback journal): a read-then-write transaction fails with "database is locked" when
  another connection writes first.

Every mode keeps connections open between requests (``CONN_MAX_AGE = None``, the setting
docs/django.md recommends; ``EXAMPLE_CONN_MAX_AGE=0`` closes them after each request).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
MODE = os.environ.get("EXAMPLE_DB_MODE", "sqlitefair")
DB_PATH = os.environ.get("EXAMPLE_DB", str(BASE_DIR / "example.db"))
_max_age = os.environ.get("EXAMPLE_CONN_MAX_AGE", "")
CONN_MAX_AGE = None if _max_age in ("", "none", "None") else int(_max_age)

if MODE == "sqlitefair":
    _database = {"ENGINE": "sqlitefair.django", "OPTIONS": {"timeout": 5}}
elif MODE == "immediate":
    _database = {
        "ENGINE": "django.db.backends.sqlite3",
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 5,
            "init_command": (  # docs/web.md's: sqlitefair's default pragmas
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL;"
                "PRAGMA foreign_keys=ON;"
                "PRAGMA journal_size_limit=67108864;"
                "PRAGMA mmap_size=134217728;"
                "PRAGMA cache_size=2000;"
            ),
        },
    }
elif MODE == "plain":
    _database = {"ENGINE": "django.db.backends.sqlite3"}
else:
    raise SystemExit(f"EXAMPLE_DB_MODE must be 'sqlitefair', 'immediate' or 'plain', not {MODE!r}")

DATABASES = {"default": {**_database, "NAME": DB_PATH, "CONN_MAX_AGE": CONN_MAX_AGE}}

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["shop"]
MIDDLEWARE: list[str] = []  # a JSON API for load tests: no sessions, no CSRF
ROOT_URLCONF = "exampleproject.urls"
WSGI_APPLICATION = "exampleproject.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
