"""The roster a campaign runs with: offline specialists, LLM ones where the user asked, and the
rosters of the paper's controls (one generalist; as many generic copies of it as specialists)."""

from __future__ import annotations

import dataclasses

from ..environment import Environment, Specialist
from .base import Agent
from .llm import ClientSettings, llm_roster
from .offline import offline_roster
from .strategies import strategy_roster


ROSTERS = ("specialists", "single", "generic")
GENERALIST = "generalist"


def control_environment(env: Environment, roster: str,
                        strategy: str = "specialists") -> Environment:
    """`env` with the roster a campaign runs: its own specialists, or (`single`) one generalist
    that owns the whole editable surface and draws from every technique, or (`generic`) as many
    copies of that generalist as the environment has specialists; with a search `strategy`,
    that strategy alone, owning every knob of the search space."""
    if strategy != "specialists":
        return dataclasses.replace(env, specialists=(
            Specialist(strategy, "every knob of the search space", env.editable,
                       files=_declared(env)),))
    if roster == "specialists":
        return env
    owns = "the whole recipe: " + "; ".join(s.owns for s in env.specialists)
    everything = tuple(s.name for s in env.specialists)
    count = 1 if roster == "single" else len(env.specialists)
    names = [GENERALIST] if count == 1 else [f"{GENERALIST}{i + 1}" for i in range(count)]
    return dataclasses.replace(env, specialists=tuple(
        Specialist(name, owns, env.editable, everything, files=_declared(env))
        for name in names))


def _declared(env: Environment) -> tuple[str, ...]:
    """The whole surface, for a roster entry that owns everything, where the environment
    declares surfaces at all (otherwise the audit stays `unknown`, as for the specialists)."""
    return env.editable if any(s.knobs or s.symbols or s.files for s in env.specialists) else ()


def default_roster(env: Environment, seed: int, llm: ClientSettings | None = None,
                   llm_specialists: tuple[str, ...] | None = None,
                   max_repairs: int = 2, strategy: str = "specialists") -> dict[str, Agent]:
    """One offline specialist per roster entry, with LLM ones in place of `llm_specialists`
    (None: all of them) when `llm` is given; or the search `strategy`'s one agent."""
    if strategy != "specialists":
        return strategy_roster(env, strategy, seed)
    roster = offline_roster(env, seed)
    if llm is not None:
        roster.update(llm_roster(env, llm, llm_specialists, max_repairs))
    return roster
