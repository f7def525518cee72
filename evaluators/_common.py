"""What every evaluator shares: the command line, `harness.json` in, `outcome.json` out, labels.

The contract is evaluators/README.md. Evaluators are plain scripts run by the harness; this module
imports neither `mlflow` nor `mlflow_autoresearch`. Faults of the harness's own inputs (an
unreadable `harness.json`, data that `prepare` never built) raise `HarnessError`: the evaluator then
exits non-zero without writing an outcome, and the harness records `harness_abort` itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = 1          # harness.json
OUTCOME_SCHEMA = 2  # outcome.json: schema 2 added "gates"
EXCERPT_CHARS = 2000

# First match wins (evaluators/README.md, "Labels and precedence").
PRECEDENCE = ("harness_abort", "illegal", "train_budget_overrun", "eval_budget_overrun",
              "size_blocked", "crash", "disqualified", "ok")
# Labels only the harness gives: an evaluator reports those faults by exiting non-zero.
HARNESS_LABELS = ("harness_abort", "preflight_crash")
SANDBOX_VAR = "AUTORESEARCH_SANDBOX"  # the harness's sandbox launcher and policy (README.md)


class HarnessError(Exception):
    """The harness's own inputs are unusable; the harness records harness_abort itself."""


class DataUnavailable(Exception):
    """`prepare` cannot obtain its data (offline, no file placed by hand); exit code 2."""


@dataclass(frozen=True)
class Outcome:
    """A trial's verdict as `outcome.json` states it (schema 1); invalid values raise ValueError."""

    label: str
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    excerpt: str = ""
    gates: tuple[str, ...] = ()  # the harness's gates this evaluator checked

    def __post_init__(self) -> None:
        if self.label not in PRECEDENCE or self.label in HARNESS_LABELS:
            raise ValueError(f"label {self.label!r} is not an evaluator's to give")
        finite = self.score is not None and math.isfinite(self.score)
        if finite != (self.label == "ok"):
            raise ValueError(f"score must be finite exactly when the label is ok "
                             f"(label {self.label!r}, score {self.score!r})")
        for name, value in self.metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"metric {name!r} is not a finite number: {value!r}")
        if len(self.excerpt) > EXCERPT_CHARS:
            raise ValueError(f"excerpt is {len(self.excerpt)} characters, over {EXCERPT_CHARS}")

    def to_json(self) -> str:
        return json.dumps({"schema": OUTCOME_SCHEMA, "label": self.label, "score": self.score,
                           "metrics": self.metrics, "gates": list(self.gates),
                           "excerpt": self.excerpt}, indent=1)


def sandboxed(argv: list[str], read: Iterable[Path], write: Iterable[Path]) -> list[str]:
    """`argv` as the harness's sandbox launcher runs it, seeing `read` read-only and `write`
    writable besides the system and Python; `argv` itself where no harness set a sandbox."""
    spec = os.environ.get(SANDBOX_VAR)
    if not spec:
        return list(argv)
    doc = json.loads(spec)
    policy = {**doc["policy"], "read": [*doc["policy"]["read"], *map(str, read)],
              "write": [*map(str, write)]}
    return [*doc["launcher"], json.dumps(policy), "--", *argv]


def first_label(labels: Iterable[str]) -> str:
    """The label that wins among those that apply; `ok` when none does."""
    found = set(labels)
    unknown = found - set(PRECEDENCE)
    if unknown:
        raise ValueError(f"unknown labels: {sorted(unknown)}")
    return next(label for label in PRECEDENCE if label in found or label == "ok")


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`.

    A reader (or a killed evaluator) sees the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outcome(path: Path, outcome: Outcome) -> None:
    write_atomic(path, outcome.to_json().encode())


# -------------------------------------------------------------------------------------------------
# harness.json (schema 1)
# -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeedRun:
    """One seed's cold process as the runner measured it. Paths are absolute."""

    seed: int
    wall_seconds: float
    exit_code: int
    timed_out: bool
    out_dir: Path
    stdout: Path
    stderr: Path
    refused: str = ""  # links and special files the harness removed from out_dir
    cpu_seconds: float = 0.0  # CPU seconds of the seed's process tree, measured by the harness

    def seconds(self, basis: str) -> float:
        """The seed's time on `basis` (`cpu` or `wall`): what a time score counts."""
        return self.cpu_seconds if basis == "cpu" else self.wall_seconds


@dataclass(frozen=True)
class Harness:
    environment: str
    profile: str
    budgets: dict[str, float]
    gates: dict[str, float]
    expected_seeds: tuple[int, ...]
    seeds: dict[int, SeedRun]
    workspace: Path  # the trial's copy of the environment folder, with its edit applied
    time_basis: str = "wall"  # how a time score counts: `cpu` (process tree) or `wall`


def load_harness(run_dir: Path) -> Harness:
    """Read and check `run_dir/harness.json`. Raises HarnessError naming the first problem."""
    path = run_dir / "harness.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise HarnessError(f"{path}: expected an object with \"schema\": {SCHEMA}")
    try:
        expected = tuple(_integer(s, "expected_seeds") for s in doc["expected_seeds"])
        if not expected:
            raise HarnessError(f"{path}: expected_seeds is empty")
        seeds = {}
        for entry in doc["seeds"]:
            run = SeedRun(
                seed=_integer(entry["seed"], "seed"),
                wall_seconds=_number(entry["wall_seconds"], "wall_seconds"),
                exit_code=_integer(entry["exit_code"], "exit_code"),
                timed_out=bool(entry["timed_out"]),
                out_dir=run_dir / entry["out_dir"], stdout=run_dir / entry["stdout"],
                stderr=run_dir / entry["stderr"], refused=str(entry.get("refused", "")),
                cpu_seconds=_number(entry.get("cpu_seconds", 0.0), "cpu_seconds"))
            if run.seed not in expected or run.seed in seeds:
                raise HarnessError(f"{path}: seed {run.seed} is unexpected or repeated")
            if run.wall_seconds <= 0:
                raise HarnessError(f"{path}: seed {run.seed} has wall_seconds {run.wall_seconds}")
            seeds[run.seed] = run
        budgets = {str(k): _number(v, f"budgets.{k}") for k, v in doc.get("budgets", {}).items()}
        gates = {str(k): _number(v, f"gates.{k}") for k, v in doc.get("gates", {}).items()}
        basis = str(doc.get("time_basis", "wall"))
        if basis not in ("cpu", "wall"):
            raise HarnessError(f"{path}: time_basis must be cpu or wall, got {basis!r}")
        return Harness(str(doc["environment"]), str(doc["profile"]), budgets, gates, expected,
                       seeds, run_dir / doc["workspace"], basis)
    except (KeyError, TypeError, AttributeError) as exc:
        raise HarnessError(f"{path}: malformed ({type(exc).__name__}: {exc})") from None


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HarnessError(f"harness.json: {what} must be an integer, got {value!r}")
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HarnessError(f"harness.json: {what} must be a finite number, got {value!r}")
    return float(value)


# -------------------------------------------------------------------------------------------------
# Crash excerpts
# -------------------------------------------------------------------------------------------------

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')


def read_tail(path: Path, chars: int = 200_000) -> str:
    """The last `chars` characters of a log file ('' when it is missing)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - chars))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def crash_excerpt(stderr: str, recipe_suffix: str) -> str:
    """The last traceback line plus the deepest frame in the recipe file, from a process's stderr.

    `recipe_suffix` is the recipe's path relative to its project (e.g. `recipe/airbench96.py`), so
    a frame matches wherever the workspace lives. Without a traceback (sys.exit("..."), a signal)
    this is the last non-empty line of stderr. Each part is clipped so that both fit an excerpt.
    """
    lines = [line.rstrip() for line in stderr.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call")]
    nonempty = [line for line in lines if line.strip()]
    if not starts:
        return clip(nonempty[-1], EXCERPT_CHARS // 2) if nonempty else ""
    block = lines[starts[-1]:]
    last = next((line for line in reversed(block) if line.strip()), "")
    frame = ""
    suffix = recipe_suffix.replace("\\", "/")
    for i, line in enumerate(block):
        match = _FRAME.match(line)
        if match and match["path"].replace("\\", "/").endswith(suffix):
            code = block[i + 1].strip() if i + 1 < len(block) else ""
            frame = f"  at {suffix}:{match['line']} in {match['func']}: {code}"
    last = clip(last, EXCERPT_CHARS // 2)
    return last if not frame else f"{last}\n{clip(frame, EXCERPT_CHARS // 4)}"


def clip(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` cut to at most `limit` characters, keeping its start."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -------------------------------------------------------------------------------------------------
# Data and seeds
# -------------------------------------------------------------------------------------------------

def build_once(data_dir: Path, profile: str, fmt: int, build: Callable[[Path, Path], dict],
               files: Iterable[str] = ()) -> None:
    """Run `build(public, private)` unless `data_dir` already holds a finished build of `profile`
    at format `fmt` with every file in `files` (relative to data_dir). `build` returns the build's
    metadata; public/meta.json is written last, so its presence marks a finished build."""
    public, private = data_dir / "public", data_dir / "private"
    meta_path = public / "meta.json"
    if meta_path.is_file() and all((data_dir / f).is_file() for f in files):
        meta = json.loads(meta_path.read_text())
        if meta.get("profile") == profile and meta.get("format") == fmt:
            return
    meta_path.unlink(missing_ok=True)  # a build that fails halfway must not pass for the old one
    created = [folder for folder in (public, private) if not folder.exists()]
    for folder in created:
        folder.mkdir(parents=True)
    try:
        meta = {**build(public, private), "profile": profile, "format": fmt}
    except BaseException:  # e.g. a failed download: leave no empty build behind
        for folder in created:
            if not any(folder.iterdir()):
                folder.rmdir()
        raise
    write_atomic(meta_path, json.dumps(meta, indent=1).encode())


def download(url: str, path: Path, by_hand: str = "") -> None:
    """Fetch `url` to `path` through a temporary file; DataUnavailable says how to get it by hand
    (`by_hand`, else: put it at `path`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataUnavailable(f"cannot download {url} ({exc}); "
                              f"{by_hand or f'fetch it by hand and put it at {path}'}") from None
    partial.replace(path)


def prepared_meta(data_dir: Path, profile: str, harness: Harness, files: Iterable[str] = ()) -> dict:
    """public/meta.json of a finished build for this trial's profile. Raises HarnessError when the
    build or a file in `files` (relative to data_dir) is missing, or the profiles disagree."""
    meta_path = data_dir / "public" / "meta.json"
    if not meta_path.is_file() or not all((data_dir / f).is_file() for f in files):
        raise HarnessError(f"no prepared data under {data_dir}; run prepare first")
    meta = json.loads(meta_path.read_text())
    if meta.get("profile") != profile or harness.profile != profile:
        raise HarnessError(f"profile mismatch: --profile {profile}, data {meta.get('profile')}, "
                           f"harness.json {harness.profile}")
    return meta


def failed(failures: list[tuple[str, str]], metrics: dict[str, float],
           gates: tuple[str, ...] = ()) -> Outcome | None:
    """The outcome of a trial with failures: the label that comes first by precedence, with the
    excerpt of its first occurrence; None when there are none."""
    if not failures:
        return None
    label = first_label(label for label, _ in failures)
    excerpt = next(text for found, text in failures if found == label)
    return Outcome(label, metrics=metrics, excerpt=clip(excerpt), gates=gates)


def applied_gates(harness: Harness, known: Iterable[str]) -> tuple[str, ...]:
    """The harness's gates this evaluator knows how to check. The harness stops a campaign whose
    spec declares a gate not among them, instead of silently never applying it."""
    return tuple(sorted(name for name in harness.gates if name in set(known)))


def process_status(run: SeedRun | None, seed: int, budget: float | None, recipe: str,
                   basis: str = "wall") -> tuple[str, str]:
    """(label, excerpt) of one seed's training process: it did not run, left links in its output
    (illegal), ran over `budget` seconds on the profile's time `basis` (or was killed), or exited
    non-zero (excerpt: the traceback's end in `recipe`); else ("ok", "")."""
    if run is None:
        return "crash", f"seed {seed} did not run (the runner stops at the first failed seed)"
    if run.refused:
        return "illegal", (f"seed {seed} left links or special files in its output folder, "
                           f"which the harness removed: {run.refused}")
    if run.timed_out or (budget is not None and run.seconds(basis) > budget):
        limit = f"the {budget:g} s budget" if budget is not None else "its budget"
        ran = f"{run.seconds(basis):.1f} {'CPU ' if basis == 'cpu' else ''}s"
        return ("train_budget_overrun", f"seed {seed} ran {ran}, over "
                f"{limit}{' and was killed' if run.timed_out else ''}")
    if run.exit_code != 0:
        why = crash_excerpt(read_tail(run.stderr), recipe) or "(no stderr)"
        return "crash", f"seed {seed} exited with code {run.exit_code}\n{why}"
    return "ok", ""


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------

def run_cli(argv: list[str] | None, profiles: tuple[str, ...],
            prepare: Callable[[str, Path], None],
            score: Callable[[str, Path, Path], Outcome]) -> int:
    """`prepare --profile P --data-dir D` or `score --profile P --data-dir D --run-dir R --out O`.

    Returns the exit status: 0 when prepare finished or the outcome was written (whatever the
    label), 1 for a HarnessError (no outcome written), 2 when prepare's data cannot be obtained.
    """
    parser = argparse.ArgumentParser(prog=Path(sys.argv[0]).name)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("prepare", "score"):
        sub = commands.add_parser(name)
        sub.add_argument("--profile", choices=profiles, required=True)
        sub.add_argument("--data-dir", type=Path, required=True)
        if name == "score":
            sub.add_argument("--run-dir", type=Path, required=True)
            sub.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(args.profile, args.data_dir)
        else:
            write_outcome(args.out, score(args.profile, args.data_dir, args.run_dir))
    except DataUnavailable as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    except HarnessError as exc:
        print(f"{parser.prog}: harness fault: {exc}", file=sys.stderr)
        return 1
    return 0
