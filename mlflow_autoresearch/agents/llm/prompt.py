"""Prompt assembly for LLM specialists: the stable part first, so prompt caching works.

The system message is the environment's facts and `knowledge.md`, the global rules
(`protocol.md`) and the specialist's preamble (`agents/<name>.md`, or a short one built from the
roster's `owns` when the environment has none). The user message is the lineage
(`AgentContext.rendered`), the parent's recipe in full, the other kept trials as diffs against it,
and the task. Two specialists' prompts are byte-identical up to the preamble; two turns of one
specialist up to the lineage.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...environment import Environment, Specialist
from ...lineage import clip
from ...records import Trial
from ..base import AgentContext

PROTOCOL = Path(__file__).resolve().parent / "protocol.md"
KNOWLEDGE_FILE = "knowledge.md"
AGENTS_DIR = "agents"
_LANGUAGES = {".py": "python", ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".sh": "bash"}


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
        parts += ["", f"## Other kept trials, as diffs against {ref(parent)}", "",
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
    return f"{ref(t)} ({t.specialist}{score}): {clip(t.hypothesis, 100).rstrip('.')}"


def ref(t: Trial) -> str:
    return f"t{t.number:04d}"


def _fenced(text: str, language: str) -> str:
    runs = [len(m) for m in re.findall(r"`{3,}", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{language}\n{text}{'' if text.endswith(chr(10)) else chr(10)}{fence}"
