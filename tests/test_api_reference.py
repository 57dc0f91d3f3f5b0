"""docs/api.rst documents every public name (scripts/docs checks the built reference as well)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sqlitefair
import sqlitefair.aio

API = Path(__file__).resolve().parent.parent / "docs" / "api.rst"
_DIRECTIVE = re.compile(r"^\.\. (?:auto)?(?P<kind>function|class|exception|data|currentmodule|module)::\s*(?P<name>\S+)", re.M)


def documented(text: str) -> set[str]:
    """The fully qualified names that api.rst's directives document."""
    names, module = set(), ""
    for match in _DIRECTIVE.finditer(text):
        kind, name = match["kind"], match["name"]
        if kind in ("currentmodule", "module"):
            module = name
        else:
            names.add(name if "." in name else f"{module}.{name}")
    return names


def public_names() -> list[str]:
    from sqlitefair.integrations import litestream

    modules = [sqlitefair, sqlitefair.aio, litestream]
    try:
        from sqlitefair.integrations import sqlite_utils
    except ImportError:  # sqlite-utils not installed: its names are checked where it is
        pass
    else:
        modules.append(sqlite_utils)
    return [f"{module.__name__}.{name}" for module in modules for name in module.__all__]


def test_the_parser_follows_currentmodule() -> None:
    text = ".. currentmodule:: a\n\n.. autofunction:: f\n\n.. autoclass:: b.C\n\n.. data:: __version__\n"
    assert documented(text) == {"a.f", "b.C", "a.__version__"}


def test_every_public_name_is_in_the_api_reference() -> None:
    names = public_names()
    assert len(names) > 40
    missing = sorted(set(names) - documented(API.read_text(encoding="utf-8")))
    assert not missing, f"add these to docs/api.rst: {missing}"


def test_the_reference_names_nothing_that_does_not_exist() -> None:
    pytest.importorskip("sqlite_utils")
    extra = sorted(documented(API.read_text(encoding="utf-8")) - set(public_names()))
    assert not extra, f"docs/api.rst documents names that are not public: {extra}"


def test_signatures_show_readable_defaults() -> None:
    """help(Pool.transaction) showed ``timeout=<object object at 0x...>``."""
    import inspect

    methods = [sqlitefair.Pool.transaction, sqlitefair.Pool.read, sqlitefair.Pool.close]
    methods += [sqlitefair.aio.AsyncPool.transaction, sqlitefair.aio.AsyncPool.read, sqlitefair.aio.AsyncPool.close]
    for method in methods:
        default = inspect.signature(method).parameters["timeout"].default
        assert repr(default) == "<the pool's timeout>", method
    assert "object at 0x" not in str(inspect.signature(sqlitefair.Pool.transaction))
    assert '"apsw"' in (sqlitefair.connect.__doc__ or "")  # both backends are listed
