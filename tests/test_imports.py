"""The architecture's dependency rules (docs/architecture.md), enforced.

The layer and import contracts live in pyproject.toml (`[tool.importlinter]`) and are checked by
import-linter; the rules it cannot express (folders that are not packages, a module of an external
package) are checked here from the source.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "mlflow_autoresearch"


def _imported(path: Path) -> set[str]:
    """Every module a file imports, absolute names (relative imports resolved against PKG)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
            names.add(".".join([*base, *([node.module] if node.module else [])]))
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_import_linter_contracts_hold():
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_projects_backend_never_reaches_tracking():
    imported = _imported(PKG / "execution" / "projects.py")
    assert {n for n in imported if n.startswith("mlflow.")} <= {
        "mlflow.entities", "mlflow.projects.backend.abstract_backend",
        "mlflow.projects.submitted_run", "mlflow.projects.utils"}


def test_the_guard_imports_only_the_standard_library():
    allowed = {"ctypes", "os", "signal", "subprocess", "sys"}
    assert _imported(PKG / "execution" / "_guard.py") <= allowed


def test_projects_evaluators_and_kernels_never_import_the_package():
    for folder in ("projects", "evaluators", "kernels"):
        for path in (ROOT / folder).rglob("*.py"):
            assert not any(n.split(".")[0] == "mlflow_autoresearch" for n in _imported(path)), path
