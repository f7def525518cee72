"""Confirmation seeds: a trial that would be kept is re-run on seeds its search never used, in the
same trial run, and kept only if the mean over all its seeds still beats the best."""

from __future__ import annotations

import re

import pytest
import yaml
from click.testing import CliRunner

from mlflow_autoresearch import tags
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.cli import main
from mlflow_autoresearch.environment import load_environment, with_confirm_seeds
from mlflow_autoresearch.errors import EnvironmentSpecError
from mlflow_autoresearch.records import Decision, FailureLabel
from mlflow_autoresearch.store import MlflowStore
from mlflow_autoresearch.testing import ScriptedAgent, check_trial_contract

RECIPE = "recipe/toy.py"
SEARCH, CONFIRM = [0, 1], [100, 101]


def seeded(on_search: str, on_confirm: str):
    """An edit whose training length depends on whether the seed is a search seed: a recipe that
    is lucky on the seeds the search used, which is what seed noise looks like."""
    def edit(files: dict[str, str]) -> dict[str, str]:
        loop = re.compile(r"^    for _ in range\(.*\):$", re.M)
        new = (f"    for _ in range({on_search} if int(float(args.seed)) < 100 "
               f"else {on_confirm}):")
        return {**files, RECIPE: loop.sub(new, files[RECIPE], count=1)}
    return edit


@pytest.fixture
def confirming_env(toy_env):
    spec = yaml.safe_load((toy_env / "autoresearch.yaml").read_text())
    spec.update(seeds=SEARCH, confirm_seeds=CONFIRM, min_delta="auto", noise_repeats=2)
    (toy_env / "autoresearch.yaml").write_text(yaml.safe_dump(spec))
    return toy_env


def test_a_keep_that_fails_confirmation_is_discarded_and_one_that_holds_is_kept(
        confirming_env, store, tmp_path):
    script = [
        # 120 steps on the search seeds, 50 on the others: it beats the baseline's 60 on the
        # search seeds and loses to it on all four.
        ("lucky on the search seeds", seeded("120", "50")),
        ("train twice as long", seeded("120", "120")),
        ("train a little less", seeded("55", "55")),
        ("crash on seeds it was never searched on", seeded("150", "undefined_name")),
    ]
    agent = ScriptedAgent("opt", script)
    lines: list[str] = []
    summary = run_campaign(Settings(str(confirming_env), trials=4, tracking_uri=store,
                                    workdir=tmp_path / "work"), {"opt": agent}, echo=lines.append)
    s = MlflowStore(store)
    base, lucky, honest, worse, crash = summary.trials
    runs = {t.number: s.raw(t.run_id) for t in summary.trials}
    for t in summary.trials:
        check_trial_contract(s, t.run_id, "toy")
        assert runs[t.number].tags[tags.CONFIRM_SEEDS] == "100,101"

    # The baseline ran its confirmation seeds unconditionally: its score is the 4-seed mean.
    m = runs[0].metrics
    assert base.decision is Decision.BASELINE and base.confirm == "passed"
    assert base.score == pytest.approx((m[tags.SCORE_SEARCH] + m[tags.SCORE_CONFIRM]) / 2)
    assert m[tags.SCORE_STD] == 0  # the repeats ran the search seeds, like the first score
    assert "confirm__seeds__100__stdout.txt" in {
        a.rsplit("/", 1)[1] for a in runs[0].artifacts}

    m = runs[1].metrics
    assert m[tags.SCORE_SEARCH] < base.score - 0.0001  # it would have been kept ...
    assert lucky.score > base.score                    # ... but the pooled mean loses
    assert (lucky.label, lucky.decision, lucky.confirm) == \
        (FailureLabel.OK, Decision.DISCARD, "failed")
    assert "confirmation failed" in lucky.excerpt and "[100, 101]" in lucky.excerpt
    assert f"{tags.CONFIRM_METRIC_PREFIX}mse" in m

    assert (honest.decision, honest.confirm) == (Decision.KEEP, "passed")
    assert honest.score == pytest.approx(runs[2].metrics[tags.SCORE_CONFIRM], rel=1e-3)
    assert runs[2].metrics["mse"] == honest.score  # the spec's score metric is pooled too

    # A trial the search seeds already reject never runs the confirmation seeds.
    assert (worse.decision, worse.confirm) == (Decision.DISCARD, "")
    assert tags.SCORE_SEARCH not in runs[3].metrics
    assert not any("confirm__" in a for a in runs[3].artifacts)

    # A crash on the confirmation seeds is the trial's label.
    assert (crash.label, crash.confirm) == (FailureLabel.CRASH, "failed")
    assert crash.excerpt.startswith("on the confirmation seeds:")
    assert summary.best.run_id == honest.run_id

    context = s.read_text(worse.run_id, tags.CONTEXT)
    assert "discard, confirmation failed]" in context
    assert any(line.endswith("confirmation failed: lucky on the search seeds") for line in lines)


def test_confirm_seeds_are_checked_counted_and_fixed_per_campaign(toy_env, store, tmp_path):
    spec_file = toy_env / "autoresearch.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec_file.write_text(yaml.safe_dump({**spec, "confirm_seeds": [1, 5]}))
    with pytest.raises(EnvironmentSpecError, match="'confirm_seeds' .* disjoint from 'seeds'"):
        load_environment(str(toy_env))
    spec_file.write_text(yaml.safe_dump({**spec, "confirm_seeds": [9]}))
    env = load_environment(str(toy_env))
    assert [with_confirm_seeds(env, n).confirm_seeds for n in (0, 1, 3)] == \
        [(), (9,), (9, 10, 11)]

    args = ["run", str(toy_env), "--trials", "0", "--tracking-uri", store,
            "--workdir", str(tmp_path / "work")]
    first = CliRunner().invoke(main, [*args, "--confirm-seeds", "2"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0
    assert "ran with --confirm-seeds 2, not --confirm-seeds 1: continue it with " \
           "--confirm-seeds 2" in again.output
