import pytest

from mlflow_autoresearch.diffs import diff_lines, diff_sha, make_diff
from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.execution.preflight import (PreflightError, apply_diff, check_diff,
                                                   syntax_check, verify_surface)
from mlflow_autoresearch.execution.workspace import materialise, read_editable


@pytest.fixture
def env(toy_env):
    return load_environment(str(toy_env))


def _edit(env, old, new):
    files = read_editable(env, env.root)
    changed = {k: v.replace(old, new) for k, v in files.items()}
    return make_diff(files, changed)


def test_diff_applies_to_a_fresh_workspace(env, tmp_path):
    ws = materialise(env, None, tmp_path / "ws")
    diff = _edit(env, "STEPS = 60", "STEPS = 300")
    assert apply_diff(env, ws, diff) == ["recipe/toy.py"]
    assert "STEPS = 300" in (ws / "recipe/toy.py").read_text()
    assert "STEPS = 60" in (env.root / "recipe/toy.py").read_text()  # the original is untouched
    assert diff_lines(diff) == 2


def test_parent_files_are_laid_over_the_environment(env, tmp_path):
    files = read_editable(env, env.root)
    files["recipe/toy.py"] = files["recipe/toy.py"].replace("LR = 0.1", "LR = 0.2")
    ws = materialise(env, files, tmp_path / "ws")
    assert "LR = 0.2" in (ws / "recipe/toy.py").read_text()


def test_a_diff_that_does_not_apply_is_refused_with_gits_reason(env, tmp_path):
    ws = materialise(env, None, tmp_path / "ws")
    stale = _edit(env, "STEPS = 60", "STEPS = 300").replace("-STEPS = 60", "-STEPS = 999")
    with pytest.raises(PreflightError, match="does not apply"):
        apply_diff(env, ws, stale)


@pytest.mark.parametrize("target, reason", [
    ("../evaluators/toy.py", "touches the evaluator"),
    ("../../../../etc/passwd", "outside the workspace"),
    ("MLproject", "protected file 'MLproject'"),
    ("techniques.yaml", "protected file 'techniques.yaml'"),
    ("autoresearch.yaml", "protected file 'autoresearch.yaml'"),
    ("recipe/other.py", "not an editable file"),
])
def test_edits_outside_the_editable_surface_are_refused(env, target, reason):
    diff = f"--- a/{target}\n+++ b/{target}\n@@ -1 +1 @@\n-x\n+y\n"
    with pytest.raises(PreflightError, match=reason):
        check_diff(env, diff)


def test_absolute_path_to_the_evaluator_is_refused(env):
    path = str(env.evaluator)
    with pytest.raises(PreflightError, match="evaluator"):
        check_diff(env, f"--- {path}\n+++ {path}\n@@ -1 +1 @@\n-x\n+y\n")


def test_new_files_and_garbage_are_refused(env):
    with pytest.raises(PreflightError, match="adds or deletes"):
        check_diff(env, "--- /dev/null\n+++ b/recipe/new.py\n@@ -0,0 +1 @@\n+x\n")
    with pytest.raises(PreflightError, match="changes no file"):
        check_diff(env, "I think you should raise the learning rate.")


def test_syntax_errors_are_caught_before_running(env, tmp_path):
    ws = materialise(env, None, tmp_path / "ws")
    apply_diff(env, ws, _edit(env, "STEPS = 60", "STEPS = = 60"))
    with pytest.raises(PreflightError, match="syntax error in recipe/toy.py line"):
        syntax_check(ws, ["recipe/toy.py"])


def test_diff_sha_ignores_trailing_whitespace():
    assert diff_sha("--- a\n+++ b\n-x \n+y\n") == diff_sha("--- a\n+++ b\n-x\n+y\n\n")
    assert diff_sha("-x\n+y\n") != diff_sha("-x\n+z\n")


def _rename(old: str, new: str) -> str:
    """A git diff whose header names an editable file while its rename lines move another:
    the parsed file names look harmless, `git apply` follows the rename lines."""
    return (f"diff --git a/recipe/toy.py b/recipe/toy.py\nsimilarity index 100%\n"
            f"rename from {old}\nrename to {new}\n")


@pytest.mark.parametrize("old", ["techniques.yaml", "MLproject"])
def test_a_rename_hidden_behind_an_editable_header_is_refused(env, tmp_path, old):
    assert check_diff(env, _rename(old, "moved.yaml")) == ["recipe/toy.py"]  # the names pass ...
    ws = materialise(env, None, tmp_path / "ws")
    with pytest.raises(PreflightError, match=f"removes or renames '{old}'"):
        apply_diff(env, ws, _rename(old, "moved.yaml"))  # ... the post-condition does not
    assert (env.root / old).is_file()


def test_the_post_condition_refuses_new_files_and_links(env, tmp_path):
    ws = materialise(env, None, tmp_path / "ws")
    (ws / "recipe" / "extra.py").write_text("x = 1\n")
    with pytest.raises(PreflightError, match="creates 'recipe/extra.py'"):
        verify_surface(env, ws)
    (ws / "recipe" / "extra.py").unlink()
    (ws / "recipe" / "toy.py").unlink()
    (ws / "recipe" / "toy.py").symlink_to(env.evaluator)
    with pytest.raises(PreflightError, match="turns 'recipe/toy.py' into a symbolic link"):
        verify_surface(env, ws)
    (ws / "recipe" / "toy.py").unlink()
    (ws / "recipe" / "toy.py").write_text((env.root / "recipe" / "toy.py").read_text())
    (ws / "MLproject").write_text("name: mine\n")
    with pytest.raises(PreflightError, match="changes protected file 'MLproject'"):
        verify_surface(env, ws)
