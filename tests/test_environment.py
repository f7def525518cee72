import os

import pytest
import yaml

from mlflow_autoresearch.environment import load_environment, shipped_environments
from mlflow_autoresearch.errors import EnvironmentSpecError
from mlflow_autoresearch.records import Direction
from support import ROOT


def test_loads_the_toy_environment_by_path(toy_env):
    env = load_environment(str(toy_env))
    assert env.name == "toy" and env.profile == "tiny"
    assert env.direction is Direction.MINIMIZE
    assert env.seeds == (0, 1) and env.train_seconds == 20
    assert [s.name for s in env.specialists] == ["opt", "sched"]
    assert env.is_protected("techniques.yaml") and env.is_protected("MLproject")
    assert not env.is_protected("recipe/toy.py")


def test_loads_airbench96_by_name():
    env = load_environment("airbench96", "tiny")
    assert env.entry_point == "train" and env.gates["accuracy"] == 0.98
    assert env.evaluator.name == "airbench96.py" and not env.evaluator.is_relative_to(env.root)
    assert [s.name for s in env.specialists] == ["arch", "opt", "aug", "loss", "reg"]


def test_profile_overrides_merge(toy_env):
    spec = yaml.safe_load((toy_env / "autoresearch.yaml").read_text())
    spec["profiles"]["big"] = {"seeds": [0, 1, 2], "budgets": {"train_seconds": 99}}
    (toy_env / "autoresearch.yaml").write_text(yaml.safe_dump(spec))
    env = load_environment(str(toy_env), "big")
    assert env.seeds == (0, 1, 2) and env.train_seconds == 99 and env.eval_seconds == 20


def test_every_problem_is_reported_in_one_error(toy_env):
    spec = yaml.safe_load((toy_env / "autoresearch.yaml").read_text())
    spec.update({"entry_point": "nope", "editable": ["recipe/missing.py"], "seeds": [],
                 "score": {"metric": "mse", "direction": "sideways"}, "colour": "blue",
                 "evaluator": "../evaluators/missing.py"})
    del spec["budgets"]
    (toy_env / "autoresearch.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(EnvironmentSpecError) as err:
        load_environment(str(toy_env))
    text = str(err.value)
    for expected in ("unknown keys ['colour']", "missing required key 'budgets'",
                     "recipe/missing.py' does not exist", "minimize or maximize",
                     "'seeds' must be", "entry point 'nope' is not in MLproject",
                     "evaluator '../evaluators/missing.py' does not exist",
                     "budgets.train_seconds"):
        assert expected in text
    assert "problem(s)" in text.splitlines()[0]


def test_evaluator_inside_the_environment_is_refused(toy_env):
    spec = yaml.safe_load((toy_env / "autoresearch.yaml").read_text())
    spec["evaluator"] = "recipe/toy.py"
    (toy_env / "autoresearch.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(EnvironmentSpecError, match="lies inside the environment folder"):
        load_environment(str(toy_env))


def test_unknown_environment_and_profile_say_what_to_do(toy_env):
    with pytest.raises(EnvironmentSpecError, match="no environment 'nowhere'"):
        load_environment("nowhere")
    with pytest.raises(EnvironmentSpecError, match="profile 'huge' is not defined"):
        load_environment(str(toy_env), "huge")


def test_broken_yaml_is_one_clear_error(toy_env):
    (toy_env / "autoresearch.yaml").write_text("name: [unclosed\n")
    with pytest.raises(EnvironmentSpecError, match="not valid YAML"):
        load_environment(str(toy_env))


def test_python_path_resolves_outside_folders_and_refuses_inside_ones(toy_env):
    spec = yaml.safe_load((toy_env / "autoresearch.yaml").read_text())
    (toy_env.parent / "shared").mkdir()
    spec["python_path"] = ["../shared"]
    (toy_env / "autoresearch.yaml").write_text(yaml.safe_dump(spec))
    env = load_environment(str(toy_env))
    assert env.python_path == ((toy_env.parent / "shared").resolve(),)
    assert env.child_env()["PYTHONPATH"].split(os.pathsep)[0] == str(env.python_path[0])
    spec["python_path"] = ["recipe", "../missing"]
    (toy_env / "autoresearch.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(EnvironmentSpecError) as err:
        load_environment(str(toy_env))
    assert "'recipe' lies inside the environment folder" in str(err.value)
    assert "'../missing' does not exist" in str(err.value)


def test_nanochat_shares_the_kernels_package_and_nothing_else_of_the_repository():
    env = load_environment("nanochat_d12", "tiny")
    assert env.python_path == (ROOT / "kernels",) and (ROOT / "kernels" / "attention.py").is_file()
    assert env.child_env()["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)  # `import kernels`


def test_a_spec_without_profiles_runs_as_its_one_profile(toy_env):
    spec = yaml.safe_load((toy_env / "autoresearch.yaml").read_text())
    del spec["profiles"]
    (toy_env / "autoresearch.yaml").write_text(yaml.safe_dump(spec))
    env = load_environment(str(toy_env))
    assert env.profile == "default" and env.profiles == ("default",) and env.seeds == (0, 1)
    with pytest.raises(EnvironmentSpecError, match=r"write `profiles: \{tiny: \{\}\}`"):
        load_environment(str(toy_env), "tiny")


def test_an_undefined_profile_error_names_the_fix(toy_env):
    with pytest.raises(EnvironmentSpecError, match=r"add `huge: \{\}` under `profiles`"):
        load_environment(str(toy_env), "huge")


def test_the_shipped_environments_are_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped_environments() == ["airbench96", "nanochat_d12", "parameter_golf"]
    env = load_environment("airbench96")
    assert env.root == (ROOT / "projects" / "airbench96").resolve()
    assert env.evaluator == (ROOT / "evaluators" / "airbench96.py").resolve()
