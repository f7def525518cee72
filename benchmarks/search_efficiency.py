"""Benchmark: how fast each search arm finds a better recipe, at equal trials.

Arms: the offline specialists (lineage on), the paper's controls (`--lineage off`, `--roster
single`, `--roster generic`) and the baselines a user would otherwise pick (`--strategy random`,
`--strategy optuna`). Every arm runs the real loop (same evaluator, seeds, budgets and keep rule)
for K campaign seeds x T trials, each campaign in an experiment of its own
(`search-bench/<env>/<arm>/seed<k>`); one summary run in the experiment `search-bench` holds the
tables, the best-so-far plot per environment (PNG) and every curve (JSON), and the Markdown is
also written to --out.

    python benchmarks/search_efficiency.py --envs parameter_golf --seeds 3 --trials 24

Scores: "best" is the best kept score after n trials (the keep rule's, so a gain inside the
margin does not count); "gap closed" is (baseline - best) / (baseline - best known), where the
best known is the best score any arm reached on that environment; "area" is the mean gap closed
over trials 0..T (1 = the best known from the first trial on).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from mlflow_autoresearch.campaign import Settings, run_campaign  # noqa: E402
from mlflow_autoresearch.environment import load_environment  # noqa: E402
from mlflow_autoresearch.records import Decision  # noqa: E402
from mlflow_autoresearch.store import MlflowStore  # noqa: E402

ARMS = {
    "specialists": {},
    "lineage-off": {"lineage": "off"},
    "single": {"roster": "single"},
    "generic": {"roster": "generic"},
    "random": {"strategy": "random"},
    "optuna": {"strategy": "optuna"},
}
CORE_ARMS = ("specialists", "random", "optuna")  # the arms every environment runs
CHECKPOINT = 8  # the early checkpoint reported beside the final one


@dataclass
class Campaign:
    """One arm's campaign at one seed: its best-so-far curve and its label counts."""

    env: str
    arm: str
    seed: int
    curve: list[float]                 # best kept score after trial n, n = 0..T
    keeps: int
    labels: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def run_arm(env: str, profile: str, arm: str, seed: int, trials: int, uri: str,
            workdir: Path) -> Campaign:
    """Run one campaign of `arm` and read its curve back from MLflow. A campaign already in the
    store is continued up to `trials` (or only read, when it has them): a benchmark that was
    interrupted, or run in parts side by side on one store, picks up where it stopped."""
    spec = load_environment(env, profile)
    settings = Settings(env, profile, trials, uri, f"search-bench/{spec.name}/{arm}/seed{seed}",
                        seed, workdir=workdir, **ARMS[arm])
    started = time.monotonic()
    summary = run_campaign(settings, echo=lambda line: None)
    seconds = time.monotonic() - started
    store = MlflowStore(uri)
    direction = spec.direction
    trials_run = sorted((t for t in store.trials(summary.experiment_id) if t.number <= trials),
                        key=lambda t: t.number)
    curve, best, labels, keeps = [], None, {}, 0
    for t in trials_run:
        labels[t.verdict] = labels.get(t.verdict, 0) + 1
        if t.is_kept:
            keeps += t.decision is Decision.KEEP
            if best is None or direction.better(t.score, best):
                best = t.score
        curve.append(best if best is not None else float("nan"))
    return Campaign(spec.name, arm, seed, curve, keeps, labels, seconds)


def summarize(campaigns: list[Campaign], minimize: bool) -> tuple[list[str], float]:
    """Markdown rows per arm for one environment, and the best known score."""
    finals = [c.curve[-1] for c in campaigns if c.curve]
    best_known = min(finals) if minimize else max(finals)
    rows = []
    for arm in dict.fromkeys(c.arm for c in campaigns):
        mine = [c for c in campaigns if c.arm == arm]
        at8 = [c.curve[min(CHECKPOINT, len(c.curve) - 1)] for c in mine]
        final = [c.curve[-1] for c in mine]
        gap = [_closed(c.curve[0], c.curve[-1], best_known) for c in mine]
        area = [statistics.fmean(_closed(c.curve[0], v, best_known) for v in c.curve)
                for c in mine]
        labels: dict[str, int] = {}
        for c in mine:
            for k, v in c.labels.items():
                labels[k] = labels.get(k, 0) + v
        rows.append(f"| {arm} | {_mean_std(at8)} | {_mean_std(final)} | {_mean_std(gap, 2)} | "
                    f"{_mean_std(area, 2)} | {statistics.fmean(c.keeps for c in mine):.1f} | "
                    + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) + " |")
    return rows, best_known


def _closed(baseline: float, best: float, best_known: float) -> float:
    return 1.0 if baseline == best_known else (baseline - best) / (baseline - best_known)


def _mean_std(values: list[float], digits: int = 4) -> str:
    """Scores to `digits` significant digits, fractions (digits=2) to two decimals."""
    form = ".2f" if digits == 2 else f".{digits}g"
    if len(values) < 2:
        return format(values[0], form)
    return f"{format(statistics.fmean(values), form)} ± {format(statistics.stdev(values), form)}"


def plot(env: str, campaigns: list[Campaign], path: Path) -> None:
    """Best-so-far against trial number, each arm's mean over seeds with a +-1 std band."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in dict.fromkeys(c.arm for c in campaigns):
        curves = [c.curve for c in campaigns if c.arm == arm]
        n = min(len(c) for c in curves)
        mean = [statistics.fmean(c[i] for c in curves) for i in range(n)]
        std = [statistics.pstdev([c[i] for c in curves]) for i in range(n)]
        ax.step(range(n), mean, where="post", label=arm)
        ax.fill_between(range(n), [m - s for m, s in zip(mean, std)],
                        [m + s for m, s in zip(mean, std)], step="post", alpha=0.15)
    ax.set_xlabel("trial")
    ax.set_ylabel("best kept score")
    ax.set_title(f"{env}: best so far (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", default="parameter_golf,nanochat_d12,airbench96",
                        help="comma-separated; the first runs every arm, the others "
                             f"{', '.join(CORE_ARMS)}")
    parser.add_argument("--arms", default=",".join(ARMS), help="the first environment's arms")
    parser.add_argument("--profile", default="search")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="data cache and scratch [default: a temporary folder]")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)
    envs = [e for e in args.envs.split(",") if e]
    first_arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(first_arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp) / "work"
        images = Path(tmp) / "images"
        images.mkdir()
        sections, everything = [], []
        for i, env in enumerate(envs):
            arms = first_arms if i == 0 else [a for a in CORE_ARMS if a in first_arms]
            campaigns = []
            for arm in arms:
                for seed in range(args.seeds):
                    campaigns.append(run_arm(env, args.profile, arm, seed, args.trials,
                                             args.tracking_uri, workdir))
                    c = campaigns[-1]
                    print(f"{c.env} {arm} seed {seed}: best {c.curve[-1]:.4g} after "
                          f"{len(c.curve) - 1} trials ({c.seconds:.0f} s)", flush=True)
            everything += campaigns
            spec = load_environment(env, args.profile)
            minimize = spec.direction.value == "minimize"
            rows, best_known = summarize(campaigns, minimize)
            name = spec.name
            plot(name, campaigns, images / f"search_{name}.png")
            sections.append(_section(name, args, rows, best_known, minimize))
        markdown = _document(args, argv, sections)
        _log(args.tracking_uri, markdown, everything, images)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(markdown)
            for png in images.iterdir():
                (args.out.parent / png.name).write_bytes(png.read_bytes())
    print(markdown)
    return markdown


def _section(env: str, args, rows: list[str], best_known: float, minimize: bool) -> str:
    return "\n".join([
        f"## {env} ({args.profile} profile; {'lower' if minimize else 'higher'} is better)", "",
        f"{args.seeds} campaign seeds x {args.trials} trials per arm; best known "
        f"{best_known:.4g}.", "",
        f"| arm | best at {min(CHECKPOINT, args.trials)} | best at {args.trials} | gap closed "
        f"| area | keeps | labels (all seeds) |",
        "|---|---|---|---|---|---|---|", *rows, "",
        f"![best so far on {env}](search_{env}.png)", ""])


def _document(args, argv: list[str] | None, sections: list[str]) -> str:
    command = "python benchmarks/search_efficiency.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    hardware = (f"{platform.machine()}, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}, {platform.system()} {platform.release()}")
    return "\n".join([
        "# Search efficiency: specialists against random search and Optuna TPE", "",
        f"Measured {time.strftime('%Y-%m-%d')} on {hardware}. Reproduce with `{command}`.", "",
        *sections])


def _log(uri: str, markdown: str, campaigns: list[Campaign], images: Path) -> None:
    """One summary run in the experiment `search-bench`: the tables, plots and curves."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name("search-bench")
    experiment_id = found.experiment_id if found else client.create_experiment("search-bench")
    run = client.create_run(experiment_id, run_name="search_efficiency")
    run_id = run.info.run_id
    for c in campaigns:
        client.log_metric(run_id, f"{c.env}.{c.arm}.seed{c.seed}.best", c.curve[-1])
    client.log_text(run_id, markdown, "search.md")
    client.log_text(run_id, json.dumps([c.__dict__ for c in campaigns], indent=1),
                    "curves.json")
    for png in images.iterdir():
        client.log_artifact(run_id, str(png))
    client.set_terminated(run_id)


if __name__ == "__main__":
    main()
