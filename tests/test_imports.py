"""The dependency arrows of the architecture (docs: CONTRIBUTING.md), enforced."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "mlflow_autoresearch"
ROOT = PKG.parent

# module -> the package modules it may import
ALLOWED = {
    "records": set(), "tags": set(), "errors": set(),
    "environment": {"errors", "records"},
    "lineage": {"records"},
    "workspace": {"environment"},
    "process": set(),
    "runner": {"process", "environment"},
    "evaluation": {"process", "environment", "errors", "records"},
    "tracking": {"tags", "environment", "records"},
    "agents": {"environment", "errors", "lineage", "records", "workspace"},
    "testing": {"agents", "errors", "records", "workspace"},
    "llm": {"errors"},
    "edits": set(),
    "llm_agent": {"agents", "edits", "environment", "errors", "lineage", "llm", "records",
                  "tags", "workspace"},
    "loop": {"lineage", "process", "tags", "tracking", "agents", "environment", "errors", "evaluation",
             "records", "runner", "workspace", "llm", "llm_agent"},
    "cli": {"lineage", "tracking", "errors", "loop", "llm"},
}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(package modules, top-level third-party modules) imported by a file."""
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            ours.update([node.module] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and node.module:
            theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            theirs.update(a.name.split(".")[0] for a in node.names)
    return ours, theirs


def test_package_modules_import_only_downward():
    modules = {p.stem for p in PKG.glob("*.py")} - {"__init__"}
    assert modules == set(ALLOWED), "new module: add its allowed imports here"
    for name in modules:
        ours, _ = _imports(PKG / f"{name}.py")
        assert ours <= ALLOWED[name], f"{name} imports {ours - ALLOWED[name]}"


def test_only_tracking_and_runner_import_mlflow():
    for path in PKG.glob("*.py"):
        _, theirs = _imports(path)
        if "mlflow" in theirs:
            assert path.stem in {"tracking", "runner"}, path.name


def test_projects_evaluators_and_kernels_never_import_the_package():
    for folder in ("projects", "evaluators", "kernels"):
        for path in (ROOT / folder).rglob("*.py"):
            _, theirs = _imports(path)
            assert "mlflow_autoresearch" not in theirs, path
