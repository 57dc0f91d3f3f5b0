"""Every ```python block of README.md and docs/*.md runs as pasted.

Each block runs as a script of its own, in a fresh temporary folder, with this
interpreter and this checkout's ``src`` on ``PYTHONPATH``; it must exit 0 and
print nothing to stderr (no traceback, no warning). A block that cannot run on
its own says so in the markdown, in an HTML comment on the line right before it
(several comments may stand there):

* ``<!-- not-run: why -->``: a fragment, or it needs what a test cannot have
  (a Django project, a server); the test is skipped with that reason;
* ``<!-- requires: flask, starlette -->``: modules it imports beyond sqlitefair;
  the test is skipped where one is missing.

The Flask recipe of docs/web.md is also served, through Flask's test client, on
both backends.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

import sqlitefair
from conftest import FREE_THREADED_BUILD, require_backend

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SRC = ROOT / "src"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)")
_MARKER = re.compile(r"^\s*<!--\s*(?P<key>not-run|requires)\s*:\s*(?P<value>.*?)\s*-->\s*$")
_COMMENT = re.compile(r"^\s*<!--.*-->\s*$")


@dataclass
class Example:
    """One ```python block: where it is, its code, and what the comments before it say."""

    page: Path
    line: int  # of the opening fence, 1-based
    code: str
    not_run: str | None = None
    requires: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(text: str, page: Path) -> list[Example]:
    """The ```python blocks of a markdown text (fences may be indented, as in a list item)."""
    lines = text.splitlines()
    examples: list[Example] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, info, start = match["fence"], match["info"].lower(), i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if info not in ("python", "py"):
            continue
        example = Example(page, start + 1, textwrap.dedent("\n".join(body)) + "\n")
        before = start - 1
        while before >= 0 and _COMMENT.match(lines[before]):
            marker = _MARKER.match(lines[before])
            if marker is not None and marker["key"] == "not-run":
                example.not_run = marker["value"]
            elif marker is not None:
                example.requires += [name.strip() for name in marker["value"].split(",") if name.strip()]
            before -= 1
        examples.append(example)
    return examples


EXAMPLES = [example for page in PAGES for example in python_blocks(page.read_text(encoding="utf-8"), page)]


def run_example(code: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script in ``folder`` with this interpreter and this checkout's sources."""
    script = folder / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, script.name], cwd=folder, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_the_pages_have_examples_and_every_marker_has_a_reason() -> None:
    assert len(EXAMPLES) >= 15, [e.id for e in EXAMPLES]
    for example in EXAMPLES:
        assert example.not_run is None or example.not_run, f"{example.id}: not-run needs a reason"
    runnable = [e for e in EXAMPLES if e.not_run is None]
    assert len(runnable) >= len(EXAMPLES) // 2, "most examples should run as pasted"


def test_the_parser_reads_markers_and_indented_fences() -> None:
    text = (
        "<!-- not-run: a fragment -->\n```python\nx(\n```\n\n"
        "<!-- requires: flask, starlette -->\n<!-- other -->\n```python\nimport flask\n```\n\n"
        "```sh\nls\n```\n\n1. a list item\n\n   ```python\n   print(1)\n   ```\n"
    )
    blocks = python_blocks(text, ROOT / "x.md")
    assert [(b.line, b.not_run, b.requires, b.code) for b in blocks] == [
        (2, "a fragment", [], "x(\n"),
        (8, None, ["flask", "starlette"], "import flask\n"),
        (18, None, [], "print(1)\n"),
    ]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_example_runs_as_pasted(example: Example, tmp_path: Path) -> None:
    if example.not_run is not None:
        pytest.skip(f"{example.id} marked not-run: {example.not_run}")
    missing = [name for name in example.requires if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{example.id} needs {', '.join(missing)}, not installed")
    if "apsw" in example.requires and FREE_THREADED_BUILD:
        pytest.skip(f"{example.id} uses apsw, which turns the GIL back on on free-threaded builds")
    result = run_example(example.code, tmp_path)
    assert result.returncode == 0 and not result.stderr, (
        f"{example.id} failed (exit {result.returncode}):\n{result.stderr}{result.stdout}"
    )


def test_a_broken_example_fails(tmp_path: Path) -> None:
    """The check above would catch an example that raises, or one that only warns."""
    assert run_example("import sqlitefair\nsqlitefair.connect(':memory:')\n", tmp_path).returncode != 0
    warns = run_example("import warnings\nwarnings.warn('x', DeprecationWarning, stacklevel=1)\n", tmp_path)
    assert warns.returncode == 0 and "DeprecationWarning" in warns.stderr


# -- the Flask recipe, served ------------------------------------------------------------


def flask_recipe() -> Example:
    (recipe,) = [e for e in EXAMPLES if e.page.name == "web.md" and "from flask import" in e.code]
    return recipe


def test_flask_recipe_serves_on_both_backends(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe's endpoints answer on both backends (an apsw cursor has no lastrowid: an HTTP 500)."""
    pytest.importorskip("flask")
    require_backend(backend)
    pools: list[sqlitefair.Pool] = []
    real_connect = sqlitefair.connect

    def connect(*args: Any, **kwargs: Any) -> sqlitefair.Pool:
        pool = real_connect(*args, **{**kwargs, "backend": backend})
        pools.append(pool)
        return pool

    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "recipe"}
    monkeypatch.setattr(sqlitefair, "connect", connect)
    try:
        exec(compile(flask_recipe().code, "recipe.py", "exec"), namespace)  # noqa: S102 - our own docs
        (pool,) = pools
        with pool.transaction() as conn:
            conn.execute("insert into accounts values (1, 100), (2, 0)")
        client = namespace["app"].test_client()
        call: Callable[..., Any] = client.post
        created = call("/items", json={"name": "pen"})
        assert created.status_code == 201, created.get_data(as_text=True)
        item = client.get(f"/items/{created.get_json()['id']}")
        assert (item.status_code, item.get_json()) == (200, {"id": 1, "name": "pen"})
        assert client.get("/items/99").status_code == 404
        moved = call("/transfer", json={"from": 1, "to": 2, "amount": 30})
        assert moved.status_code == 200, moved.get_data(as_text=True)
        assert call("/transfer", json={"from": 2, "to": 1, "amount": 31}).status_code == 409
        with pool.read() as conn:
            assert conn.execute("select id, balance from accounts order by id").fetchall() == [(1, 70), (2, 30)]
    finally:
        for pool in pools:
            pool.close()
