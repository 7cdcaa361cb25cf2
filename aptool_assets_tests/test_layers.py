"""The package's one-way layers (docs/architecture.md, drawn by tools/layers.py): each module imports only
from layers below its own, never from a sibling unit of its layer; no modules import each other in a loop;
the product never imports the demo tooling; every module says what it is for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("layers", Path(__file__).resolve().parents[1] / "tools" / "layers.py")
layers = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(layers)

PRODUCT = layers.modules(layers.PACKAGE)


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m, path in PRODUCT.items() if layers.unit_of(m) is None and layers.has_code(path)]
    assert not unplaced, f"modules outside every layer (add them to tools/layers.py LAYERS): {unplaced}"


def test_imports_only_go_down():
    wrong = layers.violations(layers.internal_edges(PRODUCT, layers.PACKAGE))
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", [layers.PACKAGE, layers.DEMO])
def test_no_import_cycles(package):
    package_modules = layers.modules(package)
    assert package_modules, f"no modules found in {package}"
    cycles = layers.strongly_connected(layers.internal_edges(package_modules, package))
    assert not cycles, f"import cycles in {package}: {cycles}"


def test_the_product_does_not_depend_on_the_demo():
    wrong = [
        f"{name} imports {target}"
        for name, path in PRODUCT.items()
        for target in layers.imports(path, name)
        if (target == layers.DEMO or target.startswith(layers.DEMO + ".")) and name not in layers.DEMO_ENTRY
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("package", [layers.PACKAGE, layers.DEMO, "aptool_assets_tests"])
def test_every_module_says_what_it_is_for(package):
    silent = [
        name
        for name, path in layers.modules(package).items()
        if layers.has_code(path) and not layers.docstring_line(path)
    ]
    assert not silent, f"modules without an opening docstring: {silent}"


def test_the_checker_can_fail():
    """A made-up upward import, sideways import and loop are each reported."""
    edges = {
        "aptool_assets.rules.attendance": {"aptool_assets.metrics.assets"},
        "aptool_assets.sources.aeries.assets": {"aptool_assets.events.apply", "aptool_assets.tables.aeries"},
    }
    assert layers.violations(edges) == [
        "aptool_assets.rules.attendance imports aptool_assets.metrics.assets (upward: rules → metrics)",
        "aptool_assets.sources.aeries.assets imports aptool_assets.events.apply (sideways: sources.aeries → events)",
    ]
    assert layers.strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_architecture_doc_shows_the_current_layers():
    doc = layers.DOC.read_text()
    assert layers.render() in doc, "docs/architecture.md is out of date: run `.venv/bin/python tools/layers.py --write`"
