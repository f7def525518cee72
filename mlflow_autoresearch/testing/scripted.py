"""A specialist that follows a script instead of a table or an LLM, for tests and examples.

Environment authors drive their own environments through the real loop and store with fixed
edits (see tests/test_campaign.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..agents import AgentContext
from ..diffs import make_diff
from ..errors import ProposalError
from ..records import Proposal, Trial

Edit = Callable[[dict[str, str]], dict[str, str]] | str


def replace_in(path: str, old: str, new: str) -> Callable[[dict[str, str]], dict[str, str]]:
    """An edit replacing `old` by `new` (exactly once) in the editable file `path`."""
    def edit(files: dict[str, str]) -> dict[str, str]:
        if files[path].count(old) != 1:
            raise ValueError(f"{old!r} does not occur exactly once in {path}")
        return {**files, path: files[path].replace(old, new)}
    return edit


@dataclass
class ScriptedAgent:
    """Proposes the scripted edits in order, each on the current best (else the baseline).

    An edit is a function of the parent's editable files, or a raw diff string sent as is
    (to test what the harness does with diffs no honest specialist would write). `told` holds
    every trial the campaign told it about, in order.
    """

    name: str
    script: list[tuple[str, Edit]] = field(default_factory=list)
    told: list[Trial] = field(default_factory=list)

    def ask(self, ctx: AgentContext) -> Proposal:
        if not self.script:
            raise ProposalError(f"{self.name}'s script is used up")
        hypothesis, edit = self.script.pop(0)
        parent = ctx.view.root
        if parent is None:
            raise ProposalError("no trial to build on yet")
        if isinstance(edit, str):
            diff = edit
        else:
            before = ctx.load_recipe(parent.run_id)
            diff = make_diff(before, edit(before))
        return Proposal(self.name, hypothesis, diff, parent.run_id, notes="scripted")

    def tell(self, trial: Trial) -> None:
        self.told.append(trial)
