"""LLM specialists: one chat per turn, and repair inside the turn.

The prompt comes from `prompt.py`. The answer is parsed by `edits.py` and applied to the chosen
parent's files in memory; the diff is then checked exactly as the loop's preflight will
(`check_diff`, `git apply`, the post-condition, syntax). A failure goes back to the model with the
reason and the parts of the answer that were ignored, at most `max_repairs` times; parts ignored
in an answer that was used go into the proposal's notes. An answer that still cannot be used
becomes a proposal whose diff cannot apply, with the raw answers in its artifacts, so the loop
records it as `preflight_crash` like any other trial.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...diffs import diff_sha, make_diff
from ...environment import Environment
from ...errors import HarnessError, ProposalError
from ...execution.preflight import PreflightError, prepare_workspace
from ...lineage import clip
from ...records import FailureLabel, LLMCall, Proposal, Trial
from ...tags import LLM_ATTEMPTS as ATTEMPTS
from ...tags import LLM_CACHED_INPUT_TOKENS as CACHED_INPUT_TOKENS
from ...tags import LLM_COST_USD as COST_USD
from ...tags import LLM_INPUT_TOKENS as INPUT_TOKENS
from ...tags import LLM_OUTPUT_TOKENS as OUTPUT_TOKENS
from ...tags import LLM_SECONDS as SECONDS
from ..base import AgentContext
from .client import ClientSettings, LLMClient, Reply, Usage
from .edits import Answer, EditError, apply_answer, parse_answer
from .prompt import render_messages, render_repair, render_system, render_user, ref

MAX_REPAIRS = 2
OTHER_PARENTS = 3              # kept trials besides the best, shown as diffs against it
OTHER_PARENT_DIFF_CHARS = 3000
NO_HYPOTHESIS = "(the model stated no hypothesis)"
IGNORED_NOTE_CHARS = 600



@dataclass
class _Draft:
    """What one answer yields: the fields, the parent, the diff (None if none could be made), and
    one line per part of the answer that was ignored."""

    answer: Answer
    parent: Trial
    parent_note: str = ""
    diff: str | None = None
    format: str = ""
    ignored: tuple[str, ...] = ()


@dataclass
class LLMAgent:
    """A specialist that asks a language model for each proposal (see the module docstring).

    `usage` is what this specialist spent in this process; the loop sums `spent_usd` over the
    roster to enforce a campaign's dollar cap.
    """

    name: str
    client: LLMClient
    max_repairs: int = MAX_REPAIRS
    usage: Usage = field(default_factory=Usage)

    @property
    def spent_usd(self) -> float:
        return self.usage.cost_usd

    def ask(self, ctx: AgentContext) -> Proposal:
        """One chat, repaired up to `max_repairs` times; see the module docstring.

        Raises:
            ProposalError: there is no trial to build on yet.
            EndpointError: the endpoint failed; nothing is recorded for this turn.
        """
        best = ctx.view.root
        if best is None:
            raise ProposalError("no trial to build on yet")
        kept = list(ctx.view.leaderboard) or [best]
        recipes: dict[str, dict[str, str]] = {}

        def recipe(trial: Trial) -> dict[str, str]:
            if trial.run_id not in recipes:
                recipes[trial.run_id] = ctx.load_recipe(trial.run_id)
            return recipes[trial.run_id]

        others = []
        for trial in kept[1:1 + OTHER_PARENTS]:
            diff = make_diff(recipe(best), recipe(trial))
            if diff:
                others.append((trial, _cap(diff, OTHER_PARENT_DIFF_CHARS)))
        messages = [{"role": "system", "content": render_system(ctx.env, ctx.specialist)},
                    {"role": "user", "content": render_user(ctx, best, recipe(best), others)}]
        artifacts: dict[str, str] = {}
        errors: list[str] = []
        usage, seconds = Usage(), 0.0
        calls: list[LLMCall] = []
        draft = None
        attempts = 1 + max(0, self.max_repairs)
        for attempt in range(1, attempts + 1):
            suffix = "" if attempt == 1 else f"-{attempt}"
            sent = messages if attempt == 1 else messages[-1:]
            artifacts[f"llm/prompt{suffix}.md"] = render_messages(sent)
            started = time.time()
            reply = self.client.complete(messages)
            calls.append(_call(messages, reply, started, attempt))
            usage, seconds = usage + reply.usage, seconds + reply.seconds
            self.usage += reply.usage
            artifacts[f"llm/response{suffix}.md"] = reply.text
            answer = parse_answer(reply.text)
            draft = _Draft(answer, *resolve_parent(answer.parent, kept, best, ctx.view.baseline),
                           ignored=answer.ignored)
            try:
                self._realise(ctx, reply, draft, recipe)
                break
            except EditError as exc:
                errors.append(str(exc))
                if attempt < attempts:
                    messages = messages + [
                        {"role": "assistant", "content": reply.text},
                        {"role": "user", "content": render_repair(str(exc), attempts - attempt)}]
        assert draft is not None, "unreachable: at least one attempt runs"
        if errors:
            artifacts["llm/errors.md"] = "\n\n".join(
                f"## Attempt {i}\n\n{e}" for i, e in enumerate(errors, 1)) + "\n"
        failed = errors[-1] if len(errors) == attempt else ""
        return self._proposal(draft, reply, failed, attempt, usage, seconds, artifacts,
                              tuple(calls))

    def tell(self, trial: Trial) -> None:
        """Nothing to update: the next prompt shows this trial from the lineage."""

    def _realise(self, ctx: AgentContext, reply: Reply, draft: _Draft, recipe) -> None:
        """Apply the answer to the parent's files and check it as preflight will; fills `draft`.

        Raises EditError with the reason for the model, and the parts of the answer ignored.
        """
        try:
            self._apply(ctx, reply, draft, recipe)
        except EditError as exc:
            if not draft.ignored:
                raise
            raise EditError(f"{exc}\n\n" + "\n".join(draft.ignored)) from None

    def _apply(self, ctx: AgentContext, reply: Reply, draft: _Draft, recipe) -> None:
        """`_realise` less the ignored parts: their lines are added to its errors by the caller."""
        files = recipe(draft.parent)
        where = "" if draft.parent.run_id == ctx.view.root.run_id else \
            f"(applied to the recipe of {ref(draft.parent)}, your Parent) "
        editable = ctx.specialist.edits or ctx.env.editable
        default = editable[0] if len(editable) == 1 else None
        try:
            applied = apply_answer(reply.text, files, default)
        except EditError as exc:
            hint = ("\nYour answer was cut off at the output token limit: answer more briefly, "
                    "with only the fields and the edit." if reply.truncated else "")
            raise EditError(f"{where}{exc}{hint}") from None
        diff = make_diff(files, applied.files)
        if not diff:
            raise EditError(f"{where}the edit changes nothing: the replacement is identical to "
                            f"the parent's lines.")
        draft.diff, draft.format = diff, applied.format
        draft.ignored += applied.ignored
        try:
            dry_run(ctx.env, files, diff)
        except PreflightError as exc:
            raise EditError(f"{where}{exc}") from None
        tried = [c for c in ctx.children(draft.parent.run_id)
                 if c.diff_sha == diff_sha(diff) and c.label is not FailureLabel.HARNESS_ABORT]
        if tried:
            t = tried[0]
            when = (f"is running on {ref(draft.parent)} now as {ref(t)}" if t.label is None
                    else f"was already tried on {ref(draft.parent)} as {ref(t)} ({t.verdict})")
            raise EditError(f"this exact edit {when}; propose a different one.")

    def _proposal(self, draft: _Draft, reply: Reply, failed: str, attempts: int,
                  usage: Usage, seconds: float, artifacts: dict[str, str],
                  calls: tuple[LLMCall, ...] = ()) -> Proposal:
        metrics = {INPUT_TOKENS: float(usage.input_tokens),
                   OUTPUT_TOKENS: float(usage.output_tokens),
                   CACHED_INPUT_TOKENS: float(usage.cached_input_tokens),
                   COST_USD: round(usage.cost_usd, 6), ATTEMPTS: float(attempts),
                   SECONDS: round(seconds, 3)}
        tags = {"model": self.client.model}
        if reply.price_note:
            tags["llm.cost_note"] = reply.price_note
        answer = draft.answer
        how = [self.client.model]
        if draft.format:
            how.append(f"{draft.format} edit")
        if attempts > 1:
            how.append(f"{attempts} attempts")
        notes = (answer.notes or "").strip()
        if draft.parent_note:
            notes = f"{notes} {draft.parent_note}".strip()
        diff = draft.diff
        if draft.ignored and not failed:  # a failure's message lists them already
            notes = f"{notes} {clip('; '.join(draft.ignored), IGNORED_NOTE_CHARS)}".strip()
        if failed:
            notes = f"{notes} Last repair error: {clip(failed, 300)}".strip()
            if diff is None:  # nothing applies: send the raw answer, which preflight refuses
                diff = reply.text if reply.text.strip() else "(the model's answer was empty)\n"
        notes = f"{notes} [{', '.join(how)}]".strip()
        rejected = clip(failed, 1500) if failed and draft.diff is None else ""
        return Proposal(self.name, answer.hypothesis or NO_HYPOTHESIS, diff, draft.parent.run_id,
                        answer.expected_delta, notes, metrics, tags, artifacts, rejected,
                        calls=calls)


def _call(messages: list[dict[str, str]], reply: Reply, started: float,
          attempt: int) -> LLMCall:
    """One request as the store traces it: the whole chat sent, the reply, its timing and cost."""
    return LLMCall(tuple(dict(m) for m in messages), reply.text, reply.model, started,
                   reply.seconds, reply.usage.input_tokens, reply.usage.output_tokens,
                   reply.usage.cost_usd, "propose" if attempt == 1 else "repair")


def resolve_parent(named: str | None, kept: list[Trial], best: Trial,
                   baseline: Trial | None = None) -> tuple[Trial, str]:
    """The kept trial (or the baseline) the model named, else the best.

    `named` is what the model wrote: t0004, 4, trial 4, a run id, "best", "baseline".
    Returns the trial and a note when the model's choice was overridden.
    """
    words = not re.search(r"\d", named or "")
    if not named or words and re.search(r"\b(best|current|none|n/?a)\b", named, re.I):
        return best, ""
    if baseline is not None:
        if words and re.search(r"\bbaseline\b", named, re.I):
            return baseline, ""
        if baseline not in kept:
            kept = [*kept, baseline]
    for trial in kept:
        if trial.run_id in named:
            return trial, ""
    match = re.search(r"\b(?:t|trial\s*|exp_?|#)?0*(\d+)\b", named, re.I)
    if match:
        number = int(match.group(1))
        for trial in kept:
            if trial.number == number:
                return trial, ""
    return best, (f"Parent {clip(named, 40)!r} is not a kept trial; built on the best, "
                  f"{ref(best)}.")


def dry_run(env: Environment, files: dict[str, str], diff: str) -> None:
    """Apply `diff` to `files` in a scratch workspace exactly as the loop's preflight will.

    Raises:
        PreflightError: the reason preflight would record.
        HarnessError: git is missing (the loop could not apply any edit either).
    """
    with tempfile.TemporaryDirectory(prefix="autoresearch-edit-") as tmp:
        try:
            prepare_workspace(env, files, diff, Path(tmp) / "workspace")
        except PreflightError as exc:
            if "git is not installed" in str(exc):
                raise HarnessError(str(exc)) from None
            raise


def llm_roster(env: Environment, client: ClientSettings | LLMClient,
               names: list[str] | tuple[str, ...] | None = None,
               max_repairs: int = MAX_REPAIRS) -> dict[str, LLMAgent]:
    """LLM specialists for `names` of the roster of `env` (None: every one), sharing one client.

    Mix with offline specialists: `{**offline_roster(env, seed), **llm_roster(env, ...)}`.

    Raises:
        EnvironmentSpecError: a name is not in the environment's roster.
        EndpointError: no key for the OpenAI API and no base URL.
    """
    shared = client if isinstance(client, LLMClient) else LLMClient(client)
    chosen = [env.specialist(n) for n in names] if names is not None else list(env.specialists)
    return {s.name: LLMAgent(s.name, shared, max_repairs) for s in chosen}


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit("\n", 1)[0] + "\n[... diff truncated]\n"
