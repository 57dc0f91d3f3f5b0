"""A Django database backend with sqlitefair's writer queue: ``"ENGINE": "sqlitefair.django"``.

Django's own SQLite backend, with every transaction that may write started
by ``BEGIN IMMEDIATE`` after a place in sqlitefair's FIFO writer queue (the
threads of this process, and the processes on the same file through the
cross-process queue), and sqlitefair's production pragmas.  Reads outside
transactions run in parallel, each thread on its own connection, as with
Django's backend.  See docs/django.md.

.. code-block:: python

    DATABASES = {
        "default": {
            "ENGINE": "sqlitefair.django",
            "NAME": BASE_DIR / "db.sqlite3",
            "CONN_MAX_AGE": None,  # persistent connections: recommended
            "OPTIONS": {"timeout": 5},  # seconds a write may wait for its turn
        }
    }
"""
