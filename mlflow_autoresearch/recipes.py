"""Take a trial's recipe back out of MLflow: export it as a runnable environment folder with the
patch that leads to it, or measure it again (replay) on other seeds, a profile or a machine.

Both read only what the store holds (the recorded `trial/recipe/` files and the lineage), so a
result can be checked by someone who has the tracking store and the environment, nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import tags
from .campaign import Settings, prepared_evaluator
from .diffs import make_diff
from .environment import Environment, load_environment
from .errors import AutoresearchError, EnvironmentSpecError
from .execution import run_trial
from .execution.workspace import materialise
from .records import Proposal, Trial, TrialResult
from .store import MlflowStore, TrialStore

PATCH_FILE = "lineage.patch"


@dataclass(frozen=True)
class Replay:
    """A trial measured again: the trial as recorded, the new run and its result."""

    trial: Trial
    run_id: str
    result: TrialResult
    env: Environment


def environment_of(store: TrialStore, run_id: str, ref: str | None = None,
                   profile: str | None = None) -> Environment:
    """The environment a trial ran (`ref` overrides where to find it), at the trial's profile
    unless `profile` names another."""
    run_tags = store.raw(run_id).tags
    if tags.TRIAL not in run_tags:
        raise AutoresearchError(f"run {run_id} is not a trial (no {tags.TRIAL} tag): export and "
                                f"replay take a trial's run id (`autoresearch status`)")
    name = run_tags.get(tags.ENVIRONMENT, "")
    try:
        return load_environment(ref or name, profile or run_tags.get(tags.PROFILE))
    except EnvironmentSpecError as exc:
        if ref:
            raise
        raise EnvironmentSpecError(f"{exc}; the trial ran environment {name!r}: pass "
                                   f"--environment with its folder") from None


def export(store: TrialStore, run_id: str, dest: Path, ref: str | None = None) -> list[Trial]:
    """Write the trial's environment with its recipe into `dest`, and `lineage.patch`: the diffs
    from the baseline's recipe through each ancestor to the trial's, in order, which `git apply`
    applies to the baseline's folder. Returns the chain, baseline first.

    Raises:
        AutoresearchError: `dest` exists and is not empty, or the run is not a trial.
    """
    env = environment_of(store, run_id, ref)
    if dest.exists() and any(dest.iterdir()):
        raise AutoresearchError(f"{dest} is not empty: export into a new folder")
    if dest.exists():
        dest.rmdir()
    chain = store.ancestors(run_id)
    recipes = [store.load_recipe(t.run_id, env.editable) for t in chain]
    materialise(env, recipes[-1], dest)
    (dest / PATCH_FILE).write_text(lineage_patch(chain, recipes))
    return chain


def lineage_patch(chain: list[Trial], recipes: list[dict[str, str]]) -> str:
    """One patch of every step of `chain` that changed the recipe, each after a comment line
    naming its trial (git apply skips text outside the diffs)."""
    steps = [f"# The lineage of t{chain[-1].number:04d}, from the baseline t{chain[0].number:04d}"
             f"; apply to the baseline's environment folder with `git apply {PATCH_FILE}`.\n"]
    for trial, before, after in zip(chain[1:], recipes, recipes[1:]):
        diff = make_diff(before, after)
        if diff:
            hypothesis = " ".join(trial.hypothesis.split())
            steps.append(f"# t{trial.number:04d} ({trial.specialist}): {hypothesis}\n{diff}")
    return "\n".join(steps)


def replay(settings: Settings, run_id: str, seeds: tuple[int, ...] = (),
           ref: str | None = None, echo: Callable[[str], None] = print,
           store: TrialStore | None = None) -> Replay:
    """Measure trial `run_id`'s recorded recipe again with its environment's evaluator, on
    `seeds` (default the profile's) and no confirmation seeds, as a new run in its campaign
    tagged `replay_of`: never a trial, never a keep."""
    store = store or MlflowStore(settings.tracking_uri, must_exist=True)
    env = environment_of(store, run_id, ref, settings.profile)
    env = dataclasses.replace(env, seeds=seeds or env.seeds, confirm_seeds=())
    trial = store.get_trial(run_id)
    recipe = store.load_recipe(run_id, env.editable)
    evaluator = prepared_evaluator(env, settings, echo)
    echo(f"Replaying t{trial.number:04d} ({trial.specialist}) on seeds {list(env.seeds)}, "
         f"profile {env.profile}...")
    scratch = settings.workdir.resolve() / "runs" / f"replay-{run_id[:8]}"
    proposal = Proposal("replay", f"t{trial.number:04d}'s recipe, measured again.", "", None)
    result = run_trial(env, proposal, recipe, evaluator, scratch, evaluator.sandbox,
                       keep_run_dir=settings.keep_run_dirs)
    new = store.record_replay(store.campaign_of(run_id), run_id, result, env.seeds, env.profile)
    if result.error is not None:
        raise result.error
    return Replay(trial, new, result, env)
