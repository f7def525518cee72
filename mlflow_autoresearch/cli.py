"""The `autoresearch` command: launch campaigns and read their lineage back out of MLflow.

The only module that reads environment variables (through click's `envvar`s); everything below it
receives a frozen `Settings`.
"""

from __future__ import annotations

import signal
import statistics
import sys
from collections import Counter
from pathlib import Path

import click

from . import lineage
from .agents.llm import ClientSettings
from .agents.roster import ROSTERS
from .agents.strategies import STRATEGIES
from .campaign import Settings, evaluate_recipe, run_campaign
from .progress import Progress
from .recipes import PATCH_FILE, export, replay
from .report.publish import campaign_url, compare_campaigns, publish
from .doctor import FAIL, OK, run_checks
from .environment import load_environment, shipped_environments
from .errors import AutoresearchError
from .store import MlflowStore, default_uri

_URI = click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
                    help="MLflow tracking URI [default: sqlite:///mlflow.db in the working "
                         "directory; MLFLOW_TRACKING_URI overrides; http:// servers work too]")


_WORKDIR = click.option("--workdir", type=click.Path(path_type=Path),
                        default=Path(".autoresearch"), envvar="AUTORESEARCH_WORKDIR",
                        show_default=True, help="Data cache and per-trial scratch directories.")

_SANDBOX = click.option("--sandbox", type=click.Choice(["auto", "bwrap", "off"]), default="auto",
                        show_default=True, help="Run recipe code in a bubblewrap sandbox: auto "
                        "uses one where `bwrap` works (else warns and runs without), bwrap "
                        "requires it, off runs without (see `autoresearch doctor`).")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@click.group(context_settings={"auto_envvar_prefix": "AUTORESEARCH",
                               "help_option_names": ["-h", "--help"]})
def main() -> None:
    """Specialist agents search ML training recipes; every trial is an MLflow run."""
    # SIGTERM (a scheduler, `timeout`) cleans up like Ctrl-C: the running trial is killed and
    # recorded, never left behind.
    signal.signal(signal.SIGTERM, _raise_interrupt)


@main.command()
@click.argument("environment")
@click.option("--profile", default=None, help="Profile from autoresearch.yaml [default: the "
              "environment's default_profile, else tiny]")
@click.option("--trials", type=click.IntRange(min=0), default=8, show_default=True,
              help="Run until the campaign holds trials 0..N (0 is the measured baseline); "
                   "running again with a larger N continues the campaign.")
@_URI
@click.option("--experiment", default=None, help="Campaign (experiment) name "
              "[default: autoresearch/<environment>]")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the offline specialists' choices.")
@click.option("--deadline-minutes", type=float, default=None, help="Stop starting trials after "
              "this much wall time.")
@click.option("--grace-minutes", type=float, default=None, help="Stop after this long without "
              "a keep.")
@_WORKDIR
@click.option("--keep-run-dirs", is_flag=True, help="Keep each trial's scratch directory.")
@click.option("--specialists", default="offline", show_default=True,
              help="offline (technique tables, no API key), llm (every specialist asks --model), "
                   "or a comma-separated list of the specialists that use the LLM.")
@click.option("--model", default=None, help="Model for LLM specialists on any OpenAI-compatible "
              "endpoint.")
@click.option("--base-url", envvar="OPENAI_BASE_URL", default=None,
              help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 for a local vLLM, "
                   "Ollama or llama.cpp server [default: OPENAI_BASE_URL, else the OpenAI API]")
@click.option("--api-key", envvar="OPENAI_API_KEY", default=None, hidden=True)
@click.option("--max-cost-usd", type=float, default=None, help="Stop the campaign once its LLM "
              "spend reaches this many dollars.")
@click.option("--price", default=None, metavar="IN,OUT",
              help="Dollars per million input,output tokens [default: a table of list prices]")
@click.option("--llm-timeout", type=float, default=600.0, show_default=True,
              help="Seconds per LLM request.")
@click.option("--llm-retries", type=int, default=6, show_default=True,
              help="Retries with backoff on 429, 5xx, timeouts and refused connections.")
@click.option("--max-repairs", type=int, default=2, show_default=True,
              help="Times a failed edit goes back to the model within one turn.")
@click.option("--take-over", is_flag=True, help="Take the campaign from a loop whose heartbeat "
              "stopped (another machine's, or one that hung); never from a live one.")
@_SANDBOX
@click.option("--lineage", "lineage_mode", type=click.Choice(["on", "off"]), default="on",
              show_default=True,
              help="off: the no-lineage control; specialists see the current best's id and "
                   "score, the task and their own knowledge, and no trial history.")
@click.option("--roster", type=click.Choice(list(ROSTERS)), default="specialists",
              show_default=True, help="single: one generalist owning the whole recipe and "
              "every technique; generic: as many copies of it as there are specialists.")
@click.option("--confirm-seeds", type=click.IntRange(min=0), default=None,
              help="Re-run a trial that would be kept on N more seeds and keep it only if the "
                   "mean over all its seeds still wins; 0: never [default: the profile's "
                   "confirm_seeds].")
@click.option("--strategy", type=click.Choice(list(STRATEGIES)), default="specialists",
              show_default=True,
              help="random or optuna: that search strategy proposes every trial, setting the "
                   "knobs of the environment's search_space (the baselines specialists must beat).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials at once; each holds the profile's `resources` (cores, GPUs) on its "
                   "own.")
@click.option("--executor", "executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Where trials run: this machine, or a Ray cluster (the "
                                      "`ray` extra).")
@click.option("--ray-address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster to run trials on [default: RAY_ADDRESS, else a local Ray started "
                   "for the campaign].")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary (no trial lines, no "
              "live view).")
@click.option("--no-report", is_flag=True, help="Do not write the campaign's report run at the "
              "end (`autoresearch report` writes it any time).")
def run(environment, profile, trials, tracking_uri, experiment, seed, deadline_minutes,
        grace_minutes, workdir, keep_run_dirs, specialists, model, base_url, api_key,
        max_cost_usd, price, llm_timeout, llm_retries, max_repairs, take_over, sandbox,
        lineage_mode, roster, confirm_seeds, strategy, workers, executor, ray_address, quiet,
        no_report) -> None:
    """Run (or continue) a campaign on ENVIRONMENT: a name under projects/ or a folder path.

    Specialists are offline (technique tables, no API key) unless --model names an LLM.
    """
    if strategy != "specialists" and (specialists != "offline" or roster != "specialists"
                                      or lineage_mode != "on"):
        raise click.BadParameter("a search strategy proposes every trial itself: use it without "
                                 "--specialists, --roster and --lineage", param_hint="--strategy")
    llm = None
    if specialists != "offline":
        if not model:
            raise click.BadParameter("LLM specialists need --model (and --base-url for a local "
                                     "server, or OPENAI_API_KEY for OpenAI)",
                                     param_hint="--specialists")
        try:
            prices = tuple(float(p) for p in price.split(",")) if price else None
            if prices is not None and len(prices) != 2:
                raise ValueError("--price takes two numbers: IN,OUT")
            llm = ClientSettings(model, base_url, api_key, timeout_seconds=llm_timeout,
                                 max_retries=llm_retries, price_per_million=prices)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    names = None if specialists in ("offline", "llm") else tuple(
        n.strip() for n in specialists.split(",") if n.strip())
    settings = Settings(environment, profile, trials, tracking_uri, experiment, seed,
                        deadline_minutes, grace_minutes, workdir, keep_run_dirs, llm, names,
                        max_repairs, max_cost_usd, take_over, sandbox, lineage_mode, roster,
                        confirm_seeds, strategy, workers, executor, ray_address)
    with Progress(quiet=quiet) as progress:
        summary = _guard(lambda: run_campaign(settings, echo=progress.line, watcher=progress))
    click.echo(f"\nStopped: {summary.stop_reason}. This run: {len(summary.trials)} trial(s), "
               + ", ".join(f"{k} {v}" for k, v in sorted(summary.labels.items())) + ".")
    if summary.harness_seconds:
        click.echo(f"Harness overhead per trial (outside the recipe processes): median "
                   f"{statistics.median(summary.harness_seconds):.2f} s.")
    if summary.best is not None:
        click.echo(f"Best: t{summary.best.number:04d} ({summary.best.specialist}) score "
                   f"{summary.best.score:.6g}. Experiment '{summary.campaign}' "
                   f"(id {summary.experiment_id}).")
    if not no_report:
        _report(tracking_uri, summary.experiment_id)
    uri = default_uri(tracking_uri)
    serve = "" if uri.startswith("http") else f" (after `mlflow ui --backend-store-uri {uri}`)"
    click.echo(f"Browse it: {campaign_url(uri, summary.experiment_id)}{serve}")
    if summary.stop_reason.startswith("paused"):
        raise click.ClickException("the LLM endpoint is down; nothing was lost. Run the same "
                                   "command again to continue the campaign.")


@main.command()
@click.argument("environment")
@click.option("--profile", default=None, help="Profile from autoresearch.yaml.")
@_URI
@click.option("--run-id", envvar="MLFLOW_RUN_ID", default=None,
              help="Record into this run (set by `mlflow run`) [default: a new run].")
@click.option("--experiment", default=None, help="Experiment for a new run, never a campaign's "
              "[default: autoresearch/<environment>/evaluations].")
@_WORKDIR
@_SANDBOX
def evaluate(environment, profile, tracking_uri, run_id, experiment, workdir, sandbox) -> None:
    """Measure ENVIRONMENT's recipe as it is on disk, scored by its evaluator, as one trial."""
    settings = Settings(environment, profile, 0, tracking_uri, experiment, workdir=workdir,
                        sandbox=sandbox)
    trial = _guard(lambda: evaluate_recipe(settings, run_id, echo=click.echo))
    if trial.verdict != "ok":
        sys.exit(1)


@main.command()
@click.argument("environment")
@click.option("--profile", default=None, help="Profile from autoresearch.yaml.")
@click.option("--repeats", type=click.IntRange(min=2), default=None,
              help="Runs of the whole seed set [default: the profile's noise_repeats].")
@_URI
@_WORKDIR
@_SANDBOX
def noise(environment, profile, repeats, tracking_uri, workdir, sandbox) -> None:
    """Measure ENVIRONMENT's noise floor: its recipe as shipped, run REPEATS times (each a
    standalone evaluation), and the keep margin `min_delta: auto` would use."""
    def measure():
        env = load_environment(environment, profile)
        # The search seeds alone, as `min_delta: auto` measures them: no confirmation seeds.
        settings = Settings(environment, profile, 0, tracking_uri, workdir=workdir,
                            sandbox=sandbox, confirm_seeds=0)
        scores = []
        for i in range(repeats or env.noise_repeats):
            trial = evaluate_recipe(settings, echo=click.echo)
            if trial.score is None:
                raise click.ClickException(f"run {i + 1} ended {trial.verdict}: no score, so no "
                                           f"noise to measure")
            scores.append(trial.score)
        std = statistics.stdev(scores)
        click.echo(f"{env.name} ({env.profile}) {env.score_metric}: mean "
                   f"{statistics.mean(scores):.6g}, std {std:.4g} over {len(scores)} runs; keep "
                   f"margin {env.noise_z:g} x std = {env.noise_z * std:.4g} (the spec's "
                   f"min_delta: {'auto' if env.min_delta_auto else f'{env.min_delta:g}'})")
    _guard(measure)


@main.command()
@_URI
@click.option("--experiment", default=None, help="Only this campaign.")
def status(tracking_uri, experiment) -> None:
    """Campaigns in the store: trials, labels and best score."""
    def show():
        store = MlflowStore(tracking_uri, must_exist=True)
        campaigns = store.campaigns(experiment)
        if not campaigns:
            click.echo(f"There is no campaign {experiment!r} in {store.uri}." if experiment else
                       "No campaigns yet: start one with `autoresearch run airbench96`.")
            if experiment:
                sys.exit(1)
        for exp_id, name in campaigns:
            trials = store.trials(exp_id)
            labels = Counter(t.verdict for t in trials)
            click.echo(f"{name} (experiment {exp_id}): {len(trials)} trial(s); "
                       + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
            best = store.best(exp_id, store.direction(exp_id))
            if best is not None:
                click.echo("  best " + lineage.trial_line(best, 90))
    _guard(show)


@main.command("lineage")
@click.argument("run_id")
@_URI
def lineage_cmd(run_id, tracking_uri) -> None:
    """The chain from the baseline to RUN_ID, then RUN_ID's children."""
    def show():
        store = MlflowStore(tracking_uri, must_exist=True)
        chain = store.ancestors(run_id)
        for depth, trial in enumerate(chain):
            click.echo("  " * depth + lineage.trial_line(trial, 90))
        for child in reversed(store.children(store.campaign_of(run_id), run_id)):
            click.echo("  " * len(chain) + "└ " + lineage.trial_line(child, 90))
    _guard(show)


@main.command("report")
@_URI
@click.option("--experiment", default=None, help="The campaign [default: every campaign in "
              "the store].")
def report_cmd(tracking_uri, experiment) -> None:
    """Write each campaign's report run (figures, report.md, lineage.html, best_score)."""
    def write():
        store = MlflowStore(tracking_uri, must_exist=True)
        campaigns = store.campaigns(experiment)
        if not campaigns:
            raise click.ClickException(f"there is no campaign {experiment!r} in {store.uri}"
                                       if experiment else f"no campaigns in {store.uri} yet")
        for exp_id, name in campaigns:
            written = publish(store, exp_id)
            click.echo(f"{name}: report run {written.run_id} ({written.trials} trial(s), best "
                       f"{written.best_text}); artifacts under report/")
    _guard(write)


@main.command()
@click.argument("experiments", nargs=-1, required=True)
@_URI
@click.option("--out", type=click.Path(path_type=Path), default=Path("compare.png"),
              show_default=True, help="Where to write the side-by-side plot.")
def compare(experiments, tracking_uri, out) -> None:
    """Put campaigns side by side: one table and one plot (best at each trial count, keeps,
    labels)."""
    def show():
        store = MlflowStore(tracking_uri, must_exist=True)
        click.echo(compare_campaigns(store, list(experiments), out))
        click.echo(f"Plot: {out}")
    _guard(show)


@main.command("export")
@click.argument("run_id")
@click.argument("dest", type=click.Path(path_type=Path))
@_URI
@click.option("--environment", default=None, help="The environment folder the trial ran "
              "[default: the one its campaign names].")
def export_cmd(run_id, dest, tracking_uri, environment) -> None:
    """Write trial RUN_ID's recipe into DEST as a runnable copy of its environment, with
    lineage.patch: the diffs from the baseline, in order (`git apply` applies them)."""
    def write():
        store = MlflowStore(tracking_uri, must_exist=True)
        chain = export(store, run_id, dest, environment)
        click.echo(f"Wrote t{chain[-1].number:04d}'s environment to {dest}, and "
                   f"{dest / PATCH_FILE}: {len(chain) - 1} step(s) from the baseline "
                   f"t{chain[0].number:04d}.")
    _guard(write)


@main.command("replay")
@click.argument("run_id")
@_URI
@click.option("--seeds", default=None, metavar="S1,S2,...",
              help="Seeds to measure on [default: the profile's].")
@click.option("--profile", default=None, help="Profile [default: the trial's].")
@click.option("--environment", default=None, help="The environment folder the trial ran "
              "[default: the one its campaign names].")
@_WORKDIR
@_SANDBOX
def replay_cmd(run_id, tracking_uri, seeds, profile, environment, workdir, sandbox) -> None:
    """Measure trial RUN_ID's recipe again, from MLflow alone, as a new run in its campaign
    (tag autoresearch.replay_of; never a trial or a keep); print both scores."""
    try:
        chosen = tuple(int(x) for x in seeds.split(",") if x.strip()) if seeds else ()
    except ValueError:
        raise click.BadParameter("seeds are integers, comma-separated: --seeds 3,4,5",
                                 param_hint="--seeds") from None
    settings = Settings(environment or "", profile, 0, tracking_uri, workdir=workdir,
                        sandbox=sandbox)
    done = _guard(lambda: replay(settings, run_id, chosen, environment, echo=click.echo))
    trial, new = done.trial, done.result.outcome
    old = f"{trial.score:.6g}" if trial.score is not None else trial.verdict
    now = f"{new.score:.6g}" if new.score is not None else new.label.tag
    click.echo(f"t{trial.number:04d} ({trial.specialist}): recorded {old}; replay {now} on "
               f"seeds {list(done.env.seeds)} ({done.env.profile}). Replay run {done.run_id}.")
    if new.score is not None and trial.score is not None:
        click.echo(f"Replay minus recorded: {new.score - trial.score:+.4g}.")


@main.command()
def envs() -> None:
    """The environments that ship with the package (use one by name, or any folder by path)."""
    def show():
        for name in shipped_environments():
            env = load_environment(name)
            click.echo(f"{name:<16} {env.direction.value} {env.score_metric}; profiles: "
                       f"{', '.join(env.profiles)}; {env.root}")
    _guard(show)


@main.command()
@_URI
@click.option("--workdir", type=click.Path(path_type=Path), default=Path(".autoresearch"),
              envvar="AUTORESEARCH_WORKDIR", show_default=True,
              help="Where campaigns keep their data cache.")
@_SANDBOX
def doctor(tracking_uri, workdir, sandbox) -> None:
    """What works here: the sandbox, limits, GPUs, the tracking store, prepared data.

    Exits 1 when something a campaign needs is missing; each such row says how to fix it.
    """
    checks = _guard(lambda: run_checks(tracking_uri, workdir, sandbox))
    width = max(len(c.name) for c in checks)
    for check in checks:
        click.echo(f"{check.status:<5} {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != OK:
            click.echo(f"{'':<5} {'':<{width}}  fix: {check.fix}")
    if any(c.status == FAIL for c in checks):
        sys.exit(1)


def _report(tracking_uri: str | None, experiment_id: str) -> None:
    """The report run at the end of `run`; a failure here is a warning, never the campaign's."""
    try:
        written = publish(MlflowStore(tracking_uri), experiment_id)
    except AutoresearchError as exc:
        click.echo(f"WARNING: the report was not written ({exc}); run `autoresearch report`.",
                   err=True)
        return
    click.echo(f"Report: run {written.run_id} in the campaign (report/report.md, "
               f"report/lineage.html).")


def _guard(action):
    """Run `action`, turning expected failures into one-line errors (exit 1)."""
    try:
        return action()
    except AutoresearchError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; the running trial was recorded as "
                                   "harness_abort. Run the same command again to continue.")


if __name__ == "__main__":
    main()
