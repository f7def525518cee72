"""The `Agent` protocol and what an agent is given each turn.

An agent is asked for one proposal per turn (`ask`) and told the recorded trial of every proposal
it made (`tell`), whatever its label: a search strategy that keeps its own model (Optuna's ask
and tell) learns from `tell`; specialists that read their lineage from MLflow each turn need not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..environment import Environment, Specialist
from ..lineage import LineageView
from ..records import Proposal, Trial


@dataclass(frozen=True)
class AgentContext:
    """Everything a specialist may use to propose; built by the campaign from the store."""

    env: Environment
    specialist: Specialist
    number: int
    view: LineageView
    rendered: str                                   # the lineage text (trial/context.md)
    load_recipe: Callable[[str], dict[str, str]]    # run id -> editable files, from MLflow
    children: Callable[[str], list[Trial]]          # run id -> its children, failures included


class Agent(Protocol):
    """Proposes one edit per turn and hears how each of its proposals ended.

    `ask` raises ProposalError when the agent has nothing to propose this turn (the campaign
    moves on to the next specialist), and only that; an unreachable LLM raises EndpointError.
    `tell` receives the recorded `Trial` of every proposal this agent made, once, in order.
    """

    name: str

    def ask(self, ctx: AgentContext) -> Proposal: ...

    def tell(self, trial: Trial) -> None: ...
