"""LLM specialists: prompt assembly, one chat per turn, and repair inside the turn.

The prompt puts what never changes first, so provider-side prompt caching can reuse it: the
system message is the environment's facts and `knowledge.md`, the global rules
(`prompts/protocol.md`) and the specialist's preamble (`agents/<name>.md`, or a short one built
from the roster's `owns` when the environment has none). The user message is the lineage
(`AgentContext.rendered`), the parent's recipe in full, the other kept trials as diffs against it,
and the task. Two specialists' prompts are byte-identical up to the preamble; two turns of one
specialist up to the lineage.

The answer is parsed by `edits.py` and applied to the chosen parent's files in memory; the diff
is then checked exactly as the loop's preflight will (`check_diff`, `git apply`, syntax). A
failure goes back to the model with the reason, at most `max_repairs` times. An answer that still
cannot be used becomes a proposal whose diff cannot apply, with the raw answers in its
artifacts, so the loop records it as `preflight_crash` like any other trial.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .agents import AgentContext
from .edits import Answer, EditError, apply_answer, parse_answer
from .environment import Environment, Specialist
from .errors import HarnessError, ProposalError
from .lineage import clip
from .llm import ClientSettings, LLMClient, Reply, Usage
from .records import FailureLabel, Proposal, Trial
from .tags import LLM_ATTEMPTS as ATTEMPTS
from .tags import LLM_CACHED_INPUT_TOKENS as CACHED_INPUT_TOKENS
from .tags import LLM_COST_USD as COST_USD
from .tags import LLM_INPUT_TOKENS as INPUT_TOKENS
from .tags import LLM_OUTPUT_TOKENS as OUTPUT_TOKENS
from .tags import LLM_SECONDS as SECONDS
from .workspace import PreflightError, apply_diff, diff_sha, make_diff, syntax_check

PROTOCOL = Path(__file__).resolve().parent / "prompts" / "protocol.md"
KNOWLEDGE_FILE = "knowledge.md"
AGENTS_DIR = "agents"
MAX_REPAIRS = 2
OTHER_PARENTS = 3              # kept trials besides the best, shown as diffs against it
OTHER_PARENT_DIFF_CHARS = 3000
NO_HYPOTHESIS = "(the model stated no hypothesis)"
_LANGUAGES = {".py": "python", ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".sh": "bash"}


# ----------------------------------------------------------------------------------------------
# Prompt assembly
# ----------------------------------------------------------------------------------------------

def render_system(env: Environment, specialist: Specialist) -> str:
    """The stable prefix: environment facts and knowledge, global rules, then the preamble."""
    return "\n\n".join([render_environment(env), PROTOCOL.read_text().strip(),
                        load_preamble(env, specialist)]) + "\n"


def render_environment(env: Environment) -> str:
    """What counts in this environment, from autoresearch.yaml, then `knowledge.md` if any."""
    better = "lower" if env.direction.value == "minimize" else "higher"
    budgets = [f"train {env.train_seconds:g} s", f"eval {env.eval_seconds:g} s"]
    if "artifact_bytes" in env.budgets:
        budgets.append(f"artifact {env.budgets['artifact_bytes']:.0f} bytes")
    lines = [f"# Environment `{env.name}` (profile `{env.profile}`)", ""]
    if env.description:
        lines += [env.description, ""]
    lines += [
        "## What counts",
        "",
        f"- Score: `{env.score_metric}`, {better} is better. A trial is kept only if it beats the "
        f"best at record time by more than {env.min_delta:g}.",
        f"- Each trial runs {len(env.seeds)} seed(s) ({', '.join(map(str, env.seeds))}), each a "
        f"cold process timed and scored from outside by the evaluator.",
        f"- Budgets per seed: {', '.join(budgets)}.",
    ]
    if env.gates:
        gates = ", ".join(f"`{k}` {v:g}" for k, v in sorted(env.gates.items()))
        lines.append(f"- Gates (thresholds the evaluator enforces; see the description): {gates}.")
    lines.append(f"- Editable files: {', '.join(f'`{p}`' for p in env.editable)}. Off limits: "
                 f"the evaluator, `MLproject`, `autoresearch.yaml`"
                 + "".join(f", `{p}`" for p in env.protected) + ".")
    knowledge = env.root / KNOWLEDGE_FILE
    if knowledge.is_file() and knowledge.read_text().strip():
        lines += ["", "## Knowledge", "", knowledge.read_text().strip()]
    return "\n".join(lines)


def load_preamble(env: Environment, specialist: Specialist) -> str:
    """`agents/<name>.md` of the environment, or a short preamble from the roster entry."""
    path = env.root / AGENTS_DIR / f"{specialist.name}.md"
    if path.is_file():
        return path.read_text().strip()
    files = ", ".join(f"`{p}`" for p in specialist.edits)
    return (f"# Specialist `{specialist.name}`\n\n**Goal.** Improve the score through the part "
            f"of the recipe you own: {specialist.owns}.\n\n**You may change** that part, in "
            f"{files}.\n\n**You may not change** the parts other specialists own, the command "
            f"line, or what the recipe writes.\n\n**Output.** As described under \"Output\".\n\n"
            f"**Simplicity.** One coherent change per trial; less code wins ties.")


def render_user(ctx: AgentContext, parent: Trial, files: dict[str, str],
                others: list[tuple[Trial, str]]) -> str:
    """Lineage first, then the parent's recipe, other kept trials as diffs, and the task."""
    start = (f"The current best is {_name(parent)}. Build on it unless you name another kept "
             f"trial as Parent." if parent.is_kept else
             f"No trial has a valid score yet: build on the baseline, {_name(parent)}.")
    parts = [ctx.rendered.strip(), "", "# The recipe to edit", "",
             f"{start} Its editable files, exactly:"]
    for rel in sorted(files):
        parts += ["", f"## {rel}", "", _fenced(files[rel], _LANGUAGES.get(Path(rel).suffix, ""))]
    if others:
        parts += ["", f"## Other kept trials, as diffs against {_ref(parent)}", "",
                  "Name one as Parent to build on it; your edit then applies to its recipe, "
                  "which is the file above with its diff applied."]
        for trial, diff in others:
            parts += ["", f"### {_name(trial)}", "", _fenced(diff, "diff")]
    parts += ["", f"# Your turn: trial t{ctx.number:04d}", "",
              "Propose one edit, in the format under \"Output\": Hypothesis, Expected delta, "
              "Parent, Notes, then the edit."]
    return "\n".join(parts) + "\n"


def render_repair(error: str, attempts_left: int) -> str:
    return (f"Your edit could not be used:\n\n{error}\n\nAnswer again with the complete answer "
            f"in the same format (Hypothesis, Expected delta, Parent, Notes, and the whole "
            f"edit), against the parent's files exactly as shown. "
            f"{attempts_left} attempt(s) left before this trial is recorded as a "
            f"preflight_crash.")


def render_messages(messages: list[dict[str, str]]) -> str:
    """Chat messages as one Markdown document (the `llm/prompt.md` artifact)."""
    return "\n\n".join(f"<!-- {m['role']} -->\n\n{m['content']}" for m in messages) + "\n"


def _name(t: Trial) -> str:
    score = f", score {t.score:.6g}" if t.score is not None else ""
    return f"{_ref(t)} ({t.specialist}{score}): {clip(t.hypothesis, 100).rstrip('.')}"


def _ref(t: Trial) -> str:
    return f"t{t.number:04d}"


def _fenced(text: str, language: str) -> str:
    runs = [len(m) for m in re.findall(r"`{3,}", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{language}\n{text}{'' if text.endswith(chr(10)) else chr(10)}{fence}"


# ----------------------------------------------------------------------------------------------
# The agent
# ----------------------------------------------------------------------------------------------

@dataclass
class _Draft:
    """What one answer yields: the fields, the parent, and the diff (None if none could be made)."""

    answer: Answer
    parent: Trial
    parent_note: str = ""
    diff: str | None = None
    format: str = ""


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

    def propose(self, ctx: AgentContext) -> Proposal:
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
        draft = None
        attempts = 1 + max(0, self.max_repairs)
        for attempt in range(1, attempts + 1):
            suffix = "" if attempt == 1 else f"-{attempt}"
            sent = messages if attempt == 1 else messages[-1:]
            artifacts[f"llm/prompt{suffix}.md"] = render_messages(sent)
            reply = self.client.complete(messages)
            usage, seconds = usage + reply.usage, seconds + reply.seconds
            self.usage += reply.usage
            artifacts[f"llm/response{suffix}.md"] = reply.text
            answer = parse_answer(reply.text)
            draft = _Draft(answer, *resolve_parent(answer.parent, kept, best, ctx.view.baseline))
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
        return self._proposal(draft, reply, failed, attempt, usage, seconds, artifacts)

    def _realise(self, ctx: AgentContext, reply: Reply, draft: _Draft, recipe) -> None:
        """Apply the answer to the parent's files and check it as preflight will; fills `draft`.

        Raises EditError with the reason for the model.
        """
        files = recipe(draft.parent)
        where = "" if draft.parent.run_id == ctx.view.root.run_id else \
            f"(applied to the recipe of {_ref(draft.parent)}, your Parent) "
        editable = ctx.specialist.edits or ctx.env.editable
        default = editable[0] if len(editable) == 1 else None
        try:
            applied = apply_answer(reply.text, files, default)
        except EditError as exc:
            hint = (" Your answer was cut off at the output token limit: answer more briefly, "
                    "with only the fields and the edit." if reply.truncated else "")
            raise EditError(f"{where}{exc}{hint}") from None
        diff = make_diff(files, applied.files)
        if not diff:
            raise EditError(f"{where}the edit changes nothing: the replacement is identical to "
                            f"the parent's lines.")
        draft.diff, draft.format = diff, applied.format
        try:
            dry_run(ctx.env, files, diff)
        except PreflightError as exc:
            raise EditError(f"{where}{exc}") from None
        tried = [c for c in ctx.children(draft.parent.run_id)
                 if c.diff_sha == diff_sha(diff) and c.label is not FailureLabel.HARNESS_ABORT]
        if tried:
            t = tried[0]
            raise EditError(f"this exact edit was already tried on {_ref(draft.parent)} as "
                            f"{_ref(t)} ({t.verdict}); propose a different one.")

    def _proposal(self, draft: _Draft, reply: Reply, failed: str, attempts: int,
                  usage: Usage, seconds: float, artifacts: dict[str, str]) -> Proposal:
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
        if failed:
            notes = f"{notes} Last repair error: {clip(failed, 300)}".strip()
            if diff is None:  # nothing applies: send the raw answer, which preflight refuses
                diff = reply.text if reply.text.strip() else "(the model's answer was empty)\n"
        notes = f"{notes} [{', '.join(how)}]".strip()
        rejected = clip(failed, 1500) if failed and draft.diff is None else ""
        return Proposal(self.name, answer.hypothesis or NO_HYPOTHESIS, diff, draft.parent.run_id,
                        answer.expected_delta, notes, metrics, tags, artifacts, rejected)


def resolve_parent(ref: str | None, kept: list[Trial], best: Trial,
                   baseline: Trial | None = None) -> tuple[Trial, str]:
    """The kept trial (or the baseline) the model named, else the best.

    `ref` is what the model wrote: t0004, 4, trial 4, a run id, "best", "baseline".
    Returns the trial and a note when the model's choice was overridden.
    """
    words = not re.search(r"\d", ref or "")
    if not ref or words and re.search(r"\b(best|current|none|n/?a)\b", ref, re.I):
        return best, ""
    if baseline is not None:
        if words and re.search(r"\bbaseline\b", ref, re.I):
            return baseline, ""
        if baseline not in kept:
            kept = [*kept, baseline]
    for trial in kept:
        if trial.run_id in ref:
            return trial, ""
    match = re.search(r"\b(?:t|trial\s*|exp_?|#)?0*(\d+)\b", ref, re.I)
    if match:
        number = int(match.group(1))
        for trial in kept:
            if trial.number == number:
                return trial, ""
    return best, (f"Parent {clip(ref, 40)!r} is not a kept trial; built on the best, "
                  f"{_ref(best)}.")


def dry_run(env: Environment, files: dict[str, str], diff: str) -> None:
    """Apply `diff` to `files` in a scratch folder exactly as the loop's preflight will.

    Raises:
        PreflightError: the reason preflight would record.
        HarnessError: git is missing (the loop could not apply any edit either).
    """
    with tempfile.TemporaryDirectory(prefix="autoresearch-edit-") as tmp:
        root = Path(tmp) / "workspace"
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        try:
            touched = apply_diff(env, root, diff)
        except PreflightError as exc:
            if "git is not installed" in str(exc):
                raise HarnessError(str(exc)) from None
            raise
        syntax_check(root, touched)


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
