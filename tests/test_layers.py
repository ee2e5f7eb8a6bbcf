"""The library's layers: no import circles, no module importing a layer above it, and the core/UI
boundary (``latentlocal`` never imports the terminal UI's toolkits).

Checked two ways, because either alone has holes:

* statically, by the import-linter contracts in pyproject.toml (``[tool.importlinter]``), which
  read every ``import`` statement, those inside functions included (the library has dozens of
  function-level imports; importing its modules would not execute them);
* at run time, by importing every library module and running every method and the CLI in a fresh
  interpreter, then looking at ``sys.modules`` (this also sees ``importlib.import_module`` calls,
  which no static reader can).

The linter is run on a copy of the library with a function-level ``import textual`` planted in
it, so the contract is shown to catch exactly the case a module-import check misses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI_PACKAGES = ("textual", "rich", "tui")


def import_cycles(package: str = "latentlocal") -> list[list[str]]:
    """The import circles among ``package``'s modules: the strongly connected components of more
    than one module in grimp's import graph (every import statement, those inside functions and
    under ``TYPE_CHECKING`` included), found with Tarjan's algorithm."""
    import grimp

    graph = grimp.build_graph(package, cache_dir=None)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return sorted(circles)


def methods_importing_the_registry() -> set[str]:
    """Method modules that import ``methods.registry``. The registry loads them with
    ``importlib`` (a string per method in ``_MODULES``), which no static graph sees, so such an
    import is a circle the count above would miss: a method takes ``MethodSpec`` and its option
    helpers from ``methods.spec``."""
    import grimp

    graph = grimp.build_graph("latentlocal", cache_dir=None)
    return {m for m in graph.find_modules_that_directly_import("latentlocal.methods.registry")
            if m.startswith("latentlocal.methods.")}


def test_no_import_circles():
    assert import_cycles() == []
    assert methods_importing_the_registry() == set()


def _plant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, line: str) -> None:
    """Make a copy of the library, with ``line`` inside a function of ``module``, the one that
    ``latentlocal`` resolves to for grimp."""
    shutil.copytree(ROOT / "latentlocal", tmp_path / "latentlocal", ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / "latentlocal" / (module.replace(".", "/") + ".py")).open("a") as f:
        f.write(f"\n\ndef _late():\n    {line}  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "latentlocal" or m.startswith("latentlocal.")]:
        monkeypatch.delitem(sys.modules, name)


def test_the_circle_count_sees_a_function_level_circle(tmp_path, monkeypatch):
    """The count is not vacuous: where ``errors`` imports ``engine`` inside a function
    (``engine`` imports ``errors``) it finds exactly that circle."""
    _plant(tmp_path, monkeypatch, "errors", "from latentlocal.engine import Engine")
    circles = import_cycles()
    assert len(circles) == 1 and {"latentlocal.engine", "latentlocal.errors"} <= set(circles[0]), circles


def test_a_method_importing_the_registry_is_seen(tmp_path, monkeypatch):
    """The circle the registry once hid behind each method module's ``__getattr__``."""
    _plant(tmp_path, monkeypatch, "methods.cot", "from latentlocal.methods.registry import canonical")
    assert methods_importing_the_registry() == {"latentlocal.methods.cot"}


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    """lint-imports with the repository's pyproject.toml contracts, on the ``latentlocal`` that
    ``cwd`` holds (grimp resolves the root package from the working directory first)."""
    try:
        import importlinter  # noqa: F401
    except ImportError:  # the test extra installs it: a missing linter is a broken install
        pytest.fail("import-linter is not installed: pip install -e '.[test]'")
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(cwd)},
    )


def test_import_contracts_hold():
    res = _lint(ROOT)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    for name in ("the library never imports textual or rich", "only the CLI's tui command imports tui",
                 "the library's layers: no module imports a layer above it",
                 "cli: one module per subcommand over the shared flags"):
        assert f"{name} KEPT" in out, out


@pytest.mark.parametrize("where, planted, forbidden", [
    ("markers", "import textual.app", "textual"),
    ("markers", "from rich.console import Console", "rich"),
    ("markers", "from tui import forms", "tui"),
    # upward imports: markers sits below the methods, the methods below eval and the CLI
    ("markers", "from latentlocal.methods.spec import opt", "latentlocal.methods.spec"),
    ("markers", "from latentlocal.eval.runner import run_bench", "latentlocal.eval.runner"),
    ("engine", "from latentlocal.cli.common import open_engine", "latentlocal.cli.common"),
])
def test_contracts_catch_an_import_inside_a_function(tmp_path, where, planted, forbidden):
    shutil.copytree(ROOT / "latentlocal", tmp_path / "latentlocal",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "latentlocal" / (where.replace(".", "/") + ".py")
    n_lines = len(target.read_text().splitlines())
    with target.open("a") as f:
        f.write(textwrap.dedent(f"""

            def _late_import():
                {planted}  # never executed by importing this module
            """))
    res = _lint(tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert f"latentlocal.{where} -> {forbidden} (l.{n_lines + 4})" in out, out


def test_the_layers_contract_names_every_top_level_module(tmp_path):
    """exhaustive: a new module nobody gave a layer fails the suite, so the layers stay written down."""
    shutil.copytree(ROOT / "latentlocal", tmp_path / "latentlocal",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "latentlocal" / "stray.py").write_text("X = 1\n")
    res = _lint(tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "latentlocal.stray" in out, out


def _vector(path: Path) -> Path:
    import numpy as np

    from latentlocal import controlvector as cvio

    rng = np.random.default_rng(0)
    cv = cvio.ControlVector("llama", {20: (rng.standard_normal(576) * 0.05).astype(np.float32)}, n_layer=30)
    cvio.save(cv, path, {"method": "seal", "layer": 20, "recommended_scale": 0.25})
    return path


def test_library_modules_and_every_method_run_without_the_ui(tmp_path):
    """Import every module of the library, run every registered method through the CLI on the
    bundled model and list the models: none of it loads textual, rich or tui."""
    vector = _vector(tmp_path / "v.gguf")
    code = textwrap.dedent(f"""
        import importlib, io, json, pkgutil, sys
        from contextlib import redirect_stdout
        import latentlocal
        names = [m.name for m in pkgutil.walk_packages(latentlocal.__path__, "latentlocal.")]
        for name in names:
            importlib.import_module(name)
        from latentlocal.cli import main
        from latentlocal.methods import registry
        ran = []
        for method in registry.method_names():
            argv = ["run", "What is 2 + 3?", "--method", method, "--max-tokens", "4", "--json",
                    "--threads", "1", "--n-ctx", "1024", "--parallel", "4"]
            if method == "sc":
                argv += ["--samples", "2"]
            if method == "seal":
                argv += ["--vector", {str(vector)!r}]
            if method == "soft-reasoning":
                argv += ["--candidates", "2", "--rounds", "1", "--dim", "4"]
            buf = io.StringIO()
            with redirect_stdout(buf):
                assert main(argv) == 0, method
            last = json.loads(buf.getvalue().splitlines()[-1])
            assert last["type"] == "summary", (method, last)
            ran.append(method)
        with redirect_stdout(io.StringIO()):
            assert main(["models", "--json"]) == 0
        bad = sorted(m for m in sys.modules if m.split(".")[0] in {UI_PACKAGES!r})
        print(json.dumps({{"modules": len(names), "ran": ran, "bad": bad}}))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    report = __import__("json").loads(res.stdout.strip().splitlines()[-1])
    assert report["bad"] == [], report
    from latentlocal.methods import registry

    assert report["ran"] == registry.method_names() and len(report["ran"]) >= 4
    assert report["modules"] >= 30  # the walk really covered the package


def test_the_runtime_check_sees_a_late_ui_import():
    """The sys.modules check above is not vacuous: a late, dynamic import of the UI is seen."""
    code = ("import importlib, sys, latentlocal.cli; importlib.import_module('tui.app'); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {UI_PACKAGES!r}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "textual" in res.stdout and "tui" in res.stdout
