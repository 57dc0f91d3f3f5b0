"""Sphinx configuration: the hand-written guides (Markdown, read by myst-parser) and the API
reference, made by autodoc from the docstrings (api.rst). Build with scripts/docs."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))  # this checkout

import sqlitefair  # noqa: E402

project = "sqlitefair"
author = "the sqlitefair authors"
release = version = sqlitefair.__version__

extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# Markdown: headings get anchors (the guides link to #sections), as on GitHub.
myst_heading_anchors = 4

autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints_format = "short"

# Every reference must resolve (-n), but for these:
nitpicky = True
nitpick_ignore_regex = [
    # The context managers that Pool.transaction()/read(), AsyncPool.transaction()/read() and
    # DatabasePool.write()/read() return are internal classes; those methods document them.
    (r"py:class", r"sqlitefair\._writer\.Transaction|sqlitefair\._readers\.Read|sqlitefair\.(aio|integrations\.sqlite_utils)\._Checkout"),
    (r"py:class", r"sqlitefair\.(aio|_pool|integrations\.sqlite_utils)\.[TP]"),  # type variables
    # Other projects' classes (the standard library's too): their inventories (intersphinx)
    # would have to be downloaded, and the build runs without a network.
    (r"py:class", r"(os|sqlite3|sqlite_utils)\..*"),
]

html_theme = "alabaster"
html_title = f"sqlitefair {release}"


def _public_name(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve ``sqlitefair._module.Name`` (what type hints say) to the documented ``sqlitefair.Name``."""
    target = node.get("reftarget", "")
    module, _, name = target.rpartition(".")
    if node.get("refdomain") != "py" or not module.startswith("sqlitefair._"):
        return None
    for public in ("sqlitefair", "sqlitefair.aio"):
        if getattr(sys.modules.get(public), name, None) is not None:
            node["reftarget"] = f"{public}.{name}"
            return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, node["reftype"], node["reftarget"], node, contnode)
    return None


def setup(app: Any) -> None:
    app.connect("missing-reference", _public_name)
