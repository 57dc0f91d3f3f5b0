"""The contention benchmark behind ``python -m sqlitefair bench``.

One module per concern:

* :mod:`.metrics`: percentiles, Jain's fairness index, medians of repeats;
* :mod:`.environment`: interpreter, GIL, SQLite, CPUs and file system facts;
* :mod:`.interpreters`: finding and probing other Python interpreters;
* :mod:`.strategies`: the ways of doing the same transaction (stdlib, sqlite3-ruby style, sqlitefair);
* :mod:`.workloads`: the schema and the transactions themselves;
* :mod:`.plan`: which cells (workload x strategy x threads) a run measures;
* :mod:`.runner`: worker processes and threads started together, bounded in time;
* :mod:`.targets`: the project's published goals, PASS or MISS;
* :mod:`.report`: the terminal table, the verdict and the JSON file;
* :mod:`.plots`: PNG plots (matplotlib, imported only when plotting);
* :mod:`.cli`: the ``bench`` command line.

Nothing here is imported by ``import sqlitefair``.
"""
