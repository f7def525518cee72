"""The roster a campaign runs with: offline specialists, LLM ones where the user asked."""

from __future__ import annotations

from ..environment import Environment
from .base import Agent
from .llm import ClientSettings, llm_roster
from .offline import offline_roster


def default_roster(env: Environment, seed: int, llm: ClientSettings | None = None,
                   llm_specialists: tuple[str, ...] | None = None,
                   max_repairs: int = 2) -> dict[str, Agent]:
    """One offline specialist per roster entry, with LLM ones in place of `llm_specialists`
    (None: all of them) when `llm` is given."""
    roster = offline_roster(env, seed)
    if llm is not None:
        roster.update(llm_roster(env, llm, llm_specialists, max_repairs))
    return roster
