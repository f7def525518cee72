"""Environments: a folder holding an MLproject plus `autoresearch.yaml`, read into `Environment`.

`autoresearch.yaml` defines what counts (metric, direction, budgets, gates, seeds, editable and
protected files, evaluator, roster); the MLproject says how to run. `load_environment` checks the
one against the other and reports every problem in a single error. The format is documented in
the README ("Environment spec").
"""

from __future__ import annotations

import ast
import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import EnvironmentSpecError
from .records import Direction

SPEC_FILE = "autoresearch.yaml"
# The shipped environments: a link to the repository's projects/ in a checkout, a copy in a wheel.
SHIPPED = Path(__file__).resolve().parent / "shipped" / "projects"
DEFAULT_PROFILE = "default"  # the one profile of a spec that declares no `profiles`
# Parameters the harness passes to the entry point itself; the MLproject must declare them.
HARNESS_PARAMETERS = ("seed", "data_dir", "out_dir")
_TOP_KEYS = {
    "name", "description", "entry_point", "editable", "protected", "evaluator", "score",
    "min_delta", "seeds", "budgets", "gates", "parameters", "profiles", "specialists",
    "default_profile", "python_path", "limits", "time_basis", "noise_repeats", "noise_z",
    "confirm_seeds", "resources", "audit",
}
_PROFILE_KEYS = {"parameters", "seeds", "budgets", "gates", "min_delta", "limits", "time_basis",
                 "noise_repeats", "noise_z", "confirm_seeds", "resources"}
AUTO = "auto"  # `min_delta: auto`: the campaign measures the keep margin from baseline repeats
# How an evaluator that scores time counts it: CPU seconds of the recipe's process tree, which
# other work on the machine does not move, or wall seconds (a dedicated machine, a GPU).
TIME_BASES = ("wall", "cpu")
# Per-process limits of recipe code (execution/sandbox.py `Limits`); unset ones take its defaults.
LIMIT_KEYS = ("memory_mb", "processes", "file_mb")
_BUDGET_KEYS = {"train_seconds", "eval_seconds", "artifact_bytes"}
AUDIT_MODES = ("record", "enforce")  # enforce: an out-of-domain edit is a preflight_crash
_SURFACE_KEYS = ("knobs", "symbols", "files")  # a specialist's declared surface
RESOURCE_KEYS = ("cpus", "gpus")  # what one trial needs; executors hold a slot of them for it


@dataclass(frozen=True)
class Specialist:
    """A roster entry: what the specialist owns (prompt text), which editable files it edits,
    whose technique-table entries it draws from (empty: its own name's), and the surface it
    owns in a form the audit checks (`audit.py`): knobs, top-level functions or classes, and
    whole files."""

    name: str
    owns: str
    edits: tuple[str, ...]
    techniques_of: tuple[str, ...] = ()
    knobs: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Environment:
    """One environment at one profile, validated. Paths are absolute."""

    name: str
    root: Path
    profile: str
    entry_point: str
    editable: tuple[str, ...]
    protected: tuple[str, ...]
    evaluator: Path
    score_metric: str
    direction: Direction
    min_delta: float             # the keep margin; 0 until measured when `min_delta_auto`
    seeds: tuple[int, ...]
    train_seconds: float
    eval_seconds: float
    gates: dict[str, float] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    specialists: tuple[Specialist, ...] = ()
    description: str = ""
    python_path: tuple[Path, ...] = ()
    profiles: tuple[str, ...] = ()   # every profile the spec defines
    limits: dict[str, int] = field(default_factory=dict)  # LIMIT_KEYS -> a positive integer
    time_basis: str = "wall"  # one of TIME_BASES
    min_delta_auto: bool = False  # measure the margin: noise_z x the std of noise_repeats runs
    noise_repeats: int = 3
    noise_z: float = 2.0
    # A trial that would be kept is re-run on these (disjoint from `seeds`) before it is kept.
    confirm_seeds: tuple[int, ...] = ()
    cpus: float = 1.0  # `resources`: cores (a fraction shares one) and GPUs one trial needs
    gpus: int = 0
    audit: str = "record"  # one of AUDIT_MODES

    def child_env(self) -> dict[str, str]:
        """Variables for the recipe's and the evaluator's processes: `python_path` put ahead of
        any PYTHONPATH already set, so harness-owned code outside the workspace is importable
        (a package entry by its parent folder: the package, and only it, is what is shared)."""
        if not self.python_path:
            return {}
        current = os.environ.get("PYTHONPATH")
        folders = [str(p.parent if (p / "__init__.py").is_file() else p) for p in self.python_path]
        return {"PYTHONPATH": os.pathsep.join([*folders, *([current] if current else [])])}

    def is_protected(self, relpath: str) -> bool:
        """True for files no edit may touch: protected globs, the spec and the MLproject."""
        fixed = (SPEC_FILE, "MLproject")
        return relpath in fixed or any(fnmatch.fnmatch(relpath, g) for g in self.protected)

    def specialist(self, name: str) -> Specialist:
        for spec in self.specialists:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.specialists)
        raise EnvironmentSpecError(f"{self.name} has no specialist {name!r}; its roster: {known}")


def resolve_environment_dir(ref: str) -> Path:
    """Find an environment folder: a path anywhere on disk, `projects/<ref>` under the working
    directory, or one of the environments shipped with the package (installed or a checkout)."""
    for path in (Path(ref), Path.cwd() / "projects" / ref, SHIPPED / ref):
        if (path / SPEC_FILE).is_file():
            return path.resolve()
    raise EnvironmentSpecError(
        f"no environment {ref!r}: expected {ref}/{SPEC_FILE} or projects/{ref}/{SPEC_FILE}; "
        f"the shipped ones are {', '.join(shipped_environments())} (`autoresearch envs`)")


def shipped_environments() -> list[str]:
    """Names of the environments that come with the package."""
    return sorted(p.name for p in SHIPPED.iterdir() if (p / SPEC_FILE).is_file())


def load_environment(ref: str, profile: str | None = None) -> Environment:
    """Read and validate `autoresearch.yaml` in the environment `ref`, at `profile`.

    Args:
        ref: an environment name under `projects/`, or a path to an environment folder.
        profile: a profile named in the spec; None means its `default_profile` (else `tiny`; a
            spec without `profiles` runs as its `default_profile`, else `default`).

    Raises:
        EnvironmentSpecError: listing every problem found, each with the fix.
    """
    root = resolve_environment_dir(ref)
    spec_path = root / SPEC_FILE
    try:
        raw = yaml.safe_load(spec_path.read_text())
    except yaml.YAMLError as exc:
        raise EnvironmentSpecError(f"{spec_path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise EnvironmentSpecError(f"{spec_path} must be a mapping of keys to values")
    problems: list[str] = []
    env = _build(root, raw, profile, problems)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise EnvironmentSpecError(f"{spec_path} has {len(problems)} problem(s):\n{listed}")
    assert env is not None, "unreachable: _build returns None only with problems"
    return env


def _build(root: Path, raw: dict, profile: str | None, problems: list[str]) -> Environment | None:
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    for key in ("name", "entry_point", "editable", "evaluator", "score", "seeds", "budgets"):
        if key not in raw:
            problems.append(f"missing required key '{key}'")
    merged = _select_profile(raw, profile, problems)
    profile = merged.pop("_profile")

    editable = _str_list(merged.get("editable", []), "editable", problems)
    protected = _str_list(merged.get("protected", []), "protected", problems)
    for rel in editable:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            problems.append(f"editable path {rel!r} must be relative and inside the environment")
        elif not (root / rel).is_file():
            problems.append(f"editable file {rel!r} does not exist under {root}")
        elif rel in (SPEC_FILE, "MLproject") or any(fnmatch.fnmatch(rel, g) for g in protected):
            problems.append(f"{rel!r} is both editable and protected; remove it from one list")

    evaluator = _evaluator_path(root, merged.get("evaluator"), problems)
    score = merged.get("score") or {}
    metric = score.get("metric") if isinstance(score, dict) else None
    direction = score.get("direction") if isinstance(score, dict) else None
    if not isinstance(metric, str) or not metric:
        problems.append("'score.metric' must name the evaluator metric that is the score")
    if direction not in ("minimize", "maximize"):
        problems.append(f"'score.direction' must be minimize or maximize, got {direction!r}")

    seeds = merged.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        problems.append(f"'seeds' must be a non-empty list of integers, got {seeds!r}")
        seeds = []
    budgets = merged.get("budgets") or {}
    budgets = budgets if isinstance(budgets, dict) else {}
    for key in ("train_seconds", "eval_seconds"):
        if not _positive(budgets.get(key)):
            problems.append(f"'budgets.{key}' must be a positive number of seconds")
    for key in set(budgets) - _BUDGET_KEYS:
        problems.append(f"unknown budget {key!r}; allowed: {sorted(_BUDGET_KEYS)}")
    gates = merged.get("gates") or {}
    if not isinstance(gates, dict) or not all(_number(v) for v in gates.values()):
        problems.append("'gates' must map gate names to numbers")
        gates = {}
    min_delta = merged.get("min_delta", 0.0)
    auto = min_delta == AUTO
    if auto:
        min_delta = 0.0
    elif not _number(min_delta) or min_delta < 0:
        problems.append(f"'min_delta' must be a number >= 0 or `auto`, got {min_delta!r}")
        min_delta = 0.0
    repeats, z = merged.get("noise_repeats", 3), merged.get("noise_z", 2.0)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        problems.append(f"'noise_repeats' must be an integer >= 2, got {repeats!r}")
    if not _number(z) or z <= 0:
        problems.append(f"'noise_z' must be a number > 0, got {z!r}")
    confirm_seeds = _confirm_seeds(merged.get("confirm_seeds", []), seeds, problems)
    parameters = merged.get("parameters") or {}
    if not isinstance(parameters, dict):
        problems.append("'parameters' must map entry-point parameter names to values")
        parameters = {}

    limits = merged.get("limits") or {}
    if not isinstance(limits, dict):
        problems.append("'limits' must map limit names to positive integers, e.g. "
                        "`limits: {memory_mb: 8192}`")
        limits = {}
    for key, value in limits.items():
        if key not in LIMIT_KEYS:
            problems.append(f"unknown limit {key!r}; allowed: {list(LIMIT_KEYS)}")
        elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(f"'limits.{key}' must be a positive integer, got {value!r}")
    time_basis = merged.get("time_basis", "wall")
    if time_basis not in TIME_BASES:
        problems.append(f"'time_basis' must be one of {list(TIME_BASES)}, got {time_basis!r}")
    cpus, gpus = _resources(merged.get("resources") or {}, problems)
    python_path = _python_path(root, merged.get("python_path", []), problems)
    entry_point = merged.get("entry_point")
    _check_mlproject(root, entry_point, parameters, problems)
    specialists = _specialists(merged.get("specialists"), editable, problems, root)
    audit = merged.get("audit", "record")
    if audit not in AUDIT_MODES:
        problems.append(f"'audit' must be one of {list(AUDIT_MODES)}, got {audit!r}")
    if problems:
        return None
    return Environment(
        name=str(merged["name"]),
        root=root,
        profile=profile,
        entry_point=str(entry_point),
        editable=tuple(editable),
        protected=tuple(protected),
        evaluator=evaluator,
        score_metric=metric,
        direction=Direction(direction),
        min_delta=float(min_delta),
        seeds=tuple(seeds),
        train_seconds=float(budgets["train_seconds"]),
        eval_seconds=float(budgets["eval_seconds"]),
        gates={k: float(v) for k, v in gates.items()},
        budgets={k: float(v) for k, v in budgets.items()},
        parameters={k: str(v) for k, v in parameters.items()},
        specialists=specialists,
        description=str(merged.get("description", "")).strip(),
        python_path=python_path,
        profiles=tuple(raw["profiles"]) if isinstance(raw.get("profiles"), dict) else (profile,),
        limits=dict(limits),
        time_basis=str(time_basis),
        min_delta_auto=auto,
        noise_repeats=int(repeats) if isinstance(repeats, int) else 3,
        noise_z=float(z) if _number(z) else 2.0,
        confirm_seeds=confirm_seeds,
        cpus=cpus,
        gpus=gpus,
        audit=str(audit),
    )


def _resources(value: Any, problems: list[str]) -> tuple[float, int]:
    """(cpus, gpus) from `resources: {cpus: 1, gpus: 0}`; both default to those values."""
    if not isinstance(value, dict):
        problems.append(f"'resources' must map {list(RESOURCE_KEYS)} to numbers, e.g. "
                        f"`resources: {{cpus: 1, gpus: 0}}`")
        return 1.0, 0
    for key in set(value) - set(RESOURCE_KEYS):
        problems.append(f"unknown resource {key!r}; allowed: {list(RESOURCE_KEYS)}")
    cpus, gpus = value.get("cpus", 1), value.get("gpus", 0)
    if not _positive(cpus):
        problems.append(f"'resources.cpus' must be a number > 0 (0.25 shares a core four "
                        f"ways), got {cpus!r}")
        cpus = 1
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        problems.append(f"'resources.gpus' must be a whole number >= 0, got {gpus!r}")
        gpus = 0
    return float(cpus), gpus


def _confirm_seeds(value: Any, seeds: list, problems: list[str]) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in value):
        problems.append(f"'confirm_seeds' must be a list of integers, got {value!r}")
        return ()
    if len(set(value)) != len(value) or set(value) & set(seeds):
        problems.append(f"'confirm_seeds' {value} must be distinct and disjoint from 'seeds' "
                        f"{seeds}: a confirmation re-runs a trial on seeds its search never used")
        return ()
    return tuple(value)


def with_confirm_seeds(env: Environment, count: int) -> Environment:
    """`env` confirming on `count` seeds (`--confirm-seeds N`): the spec's `confirm_seeds`
    first, then the integers after every seed in use; 0 turns confirmation off."""
    chosen = list(env.confirm_seeds[:count])
    after = max((*env.seeds, *env.confirm_seeds)) + 1
    chosen += range(after, after + count - len(chosen))
    return replace(env, confirm_seeds=tuple(chosen))


def _select_profile(raw: dict, profile: str | None, problems: list[str]) -> dict:
    """The spec with `profile`'s overrides merged in, its name under `_profile`.

    A spec without `profiles` has one implicit profile, named by `default_profile` (else
    `default`), that uses the top-level values as they are.
    """
    profiles = raw.get("profiles")
    if profiles is None:
        name = raw.get("default_profile") or DEFAULT_PROFILE
        if profile not in (None, name):
            problems.append(f"profile {profile!r} is not defined: this spec has no `profiles`, so "
                            f"it runs as {name!r}; to add one, write `profiles: {{{profile}: {{}}}}`")
        return {**raw, "_profile": name}
    name = profile or raw.get("default_profile") or "tiny"
    if not isinstance(profiles, dict):
        problems.append("'profiles' must map profile names to overrides, e.g. `profiles: {tiny: {}}`")
    elif name not in profiles:
        problems.append(f"profile {name!r} is not defined; defined: {sorted(profiles)} "
                        f"(add `{name}: {{}}` under `profiles` to define it)")
    else:
        return {**_apply_profile(raw, profiles[name] or {}, name, problems), "_profile": name}
    return {**raw, "_profile": name}


def _apply_profile(raw: dict, overrides: Any, profile: str, problems: list[str]) -> dict:
    if not isinstance(overrides, dict):
        problems.append(f"profile {profile!r} must be a mapping of overrides")
        return dict(raw)
    unknown = set(overrides) - _PROFILE_KEYS
    if unknown:
        problems.append(f"profile {profile!r} has unknown keys {sorted(unknown)}; "
                        f"allowed: {sorted(_PROFILE_KEYS)}")
    merged = dict(raw)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            merged[key] = {**raw[key], **value}
        else:
            merged[key] = value
    return merged


def _evaluator_path(root: Path, value: Any, problems: list[str]) -> Path:
    if not isinstance(value, str) or not value:
        return root
    return _outside(root, value, "evaluator", Path.is_file, "move it under evaluators/", problems) or root


def _python_path(root: Path, value: Any, problems: list[str]) -> tuple[Path, ...]:
    """Folders outside the environment (so outside every workspace) that trials may import from:
    a package (a folder with `__init__.py`, importable by its name) or a folder of modules."""
    paths = [_outside(root, rel, "python_path entry", Path.is_dir, "list only folders outside it", problems)
             for rel in _str_list(value, "python_path", problems)]
    return tuple(path for path in paths if path)


def _outside(root: Path, rel: str, what: str, exists: Callable[[Path], bool], fix: str,
             problems: list[str]) -> Path | None:
    """`rel` resolved against the environment folder, or None (a problem noted) when it is missing
    or lies inside the folder, where a trial's edits could reach it."""
    path = (root / rel).resolve()
    if not exists(path):
        problems.append(f"{what} {rel!r} does not exist (resolved to {path})")
    elif path.is_relative_to(root):
        problems.append(f"{what} {rel!r} lies inside the environment folder, where edits could reach it; {fix}")
    else:
        return path
    return None


def _check_mlproject(root: Path, entry_point: Any, parameters: dict, problems: list[str]) -> None:
    mlproject = root / "MLproject"
    if not mlproject.is_file():
        problems.append(f"no MLproject in {root}")
        return
    try:
        spec = yaml.safe_load(mlproject.read_text()) or {}
    except yaml.YAMLError as exc:
        problems.append(f"MLproject is not valid YAML: {exc}")
        return
    entry_points = spec.get("entry_points") or {}
    if entry_point not in entry_points:
        problems.append(f"entry point {entry_point!r} is not in MLproject; it has "
                        f"{sorted(entry_points)}")
        return
    declared = set((entry_points[entry_point] or {}).get("parameters") or {})
    missing = [p for p in (*HARNESS_PARAMETERS, *parameters) if p not in declared]
    if missing:
        problems.append(f"MLproject entry point {entry_point!r} must declare parameters {missing}")


def _specialists(value: Any, editable: list[str], problems: list[str],
                 root: Path) -> tuple[Specialist, ...]:
    if not isinstance(value, dict) or not value:
        problems.append("'specialists' must map each specialist name to {owns, edits}")
        return ()
    roster = []
    for name, entry in value.items():
        entry = entry or {}
        edits = entry.get("edits", editable) if isinstance(entry, dict) else []
        stray = [e for e in edits if e not in editable]
        if not isinstance(entry, dict) or not entry.get("owns"):
            problems.append(f"specialist {name!r} needs 'owns': what part of the recipe it owns")
        if stray:
            problems.append(f"specialist {name!r} edits {stray}, which are not editable files")
        surface = _surface(str(name), entry if isinstance(entry, dict) else {}, edits, root,
                           problems)
        roster.append(Specialist(str(name), str(entry.get("owns", "")) if isinstance(entry, dict)
                                 else "", tuple(edits), (), *surface))
    return tuple(roster)


def _surface(name: str, entry: dict, edits: list[str], root: Path,
             problems: list[str]) -> tuple[tuple[str, ...], ...]:
    """(knobs, symbols, files) a specialist declares, each checked against its edit files:
    a knob must be a top-level `NAME =`, a symbol a top-level `def` or `class` there."""
    declared = []
    for key in _SURFACE_KEYS:
        names = entry.get(key, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append(f"specialist {name!r}: '{key}' must be a list of names")
            names = []
        declared.append(tuple(names))
    knobs, symbols, files = declared
    found = _top_level_names(root, edits)
    for key, names, kind in (("knobs", knobs, "assign"), ("symbols", symbols, "def")):
        missing = [n for n in names if n not in found[kind]]
        if missing:
            what = "top-level `NAME = ...`" if kind == "assign" else "top-level def or class"
            problems.append(f"specialist {name!r} declares {key} {missing}, which are no "
                            f"{what} in {edits}")
    stray = [f for f in files if f not in edits]
    if stray:
        problems.append(f"specialist {name!r} declares files {stray} it does not edit")
    return knobs, symbols, files


def _top_level_names(root: Path, files: list[str]) -> dict[str, set[str]]:
    """Names assigned ("assign") and defined ("def") at the top level of the Python files."""
    found: dict[str, set[str]] = {"assign": set(), "def": set()}
    for rel in files:
        path = root / rel
        try:
            tree = ast.parse(path.read_text()) if rel.endswith(".py") else None
        except (OSError, SyntaxError):
            continue  # reported where the file is read for a trial
        for node in tree.body if tree else ():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found["def"].add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found["assign"].update(t.id for t in targets if isinstance(t, ast.Name))
    return found


def _str_list(value: Any, key: str, problems: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"'{key}' must be a list of relative paths")
        return []
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0
