"""LLM specialists against a loopback OpenAI-compatible server: prompts, edits, repair, loop."""

import json
import re
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from fake_openai import FakeOpenAI, Fail
from mlflow_autoresearch import tags
from mlflow_autoresearch.agents import AgentContext, offline_roster
from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.errors import EnvironmentSpecError
from mlflow_autoresearch.lineage import LineageView
from mlflow_autoresearch.agents.llm.client import ClientSettings, EndpointError, LLMClient
from mlflow_autoresearch.agents.llm.agent import LLMAgent, dry_run, llm_roster
from mlflow_autoresearch.agents.llm.prompt import render_environment
from mlflow_autoresearch.campaign import Settings, run_campaign
from mlflow_autoresearch.records import Decision, FailureLabel, Trial
from mlflow_autoresearch.diffs import diff_sha, make_diff
from mlflow_autoresearch.execution.preflight import PreflightError, check_diff
from mlflow_autoresearch.execution.workspace import read_editable

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "mlflow_autoresearch" / "agents" / "llm" / "protocol.md"
RECIPE = "recipe/toy.py"


def answer(search, replace, parent="t0000", path=RECIPE, hypothesis="Twice the steps fit better."):
    return (f"Hypothesis: {hypothesis}\nExpected delta: -0.01\nParent: {parent}\n"
            f"Notes: the baseline stops early.\n\n{path}\n```python\n<<<<<<< SEARCH\n{search}\n"
            f"=======\n{replace}\n>>>>>>> REPLACE\n```\n")


GOOD = answer("STEPS = 60  # gradient steps", "STEPS = 120  # gradient steps")
GARBAGE = "I am not sure what to change; the recipe looks fine to me."


def trial(n, run_id, label="ok", parent=None, decision=None, spec="opt", score=1.0, sha=""):
    lab = FailureLabel.from_tag(label)
    return Trial(run_id, n, spec, f"hypothesis {n}", parent, "FINISHED", lab,
                 score if lab is FailureLabel.OK else None, decision, diff_sha=sha)


@pytest.fixture
def env(toy_env):
    return load_environment(str(toy_env))


@pytest.fixture
def base(env):
    """A campaign holding only the measured baseline r0."""
    t0 = trial(0, "r0", decision=Decision.BASELINE, spec="baseline")
    return LineageView(t0, (t0,), (t0,), (), (t0,), ()), {"r0": read_editable(env, env.root)}


def ctx(env, view, recipes, children=(), number=1, spec="opt", rendered="# Lineage\n\nt0000\n"):
    return AgentContext(env, env.specialist(spec), number, view, rendered,
                        lambda rid: recipes[rid],
                        lambda rid: [c for c in children if c.parent_id == rid])


def agent(server, name="opt", **kw):
    settings = ClientSettings("fake-model", base_url=server.base_url, max_retries=2,
                              timeout_seconds=10, price_per_million=(1.0, 2.0))
    return LLMAgent(name, LLMClient(settings), **kw)


def test_a_good_search_replace_answer_becomes_a_proper_diff(env, base):
    view, recipes = base
    with FakeOpenAI([GOOD]) as server:
        proposal = agent(server).ask(ctx(env, view, recipes))
    before = recipes["r0"]
    expected = make_diff(before, {RECIPE: before[RECIPE].replace("STEPS = 60", "STEPS = 120")})
    assert proposal.diff == expected and check_diff(env, proposal.diff) == [RECIPE]
    assert proposal.parent_id == "r0" and proposal.hypothesis == "Twice the steps fit better."
    assert proposal.expected_delta == -0.01
    assert proposal.notes.startswith("the baseline stops early.")
    assert "[fake-model, search/replace edit]" in proposal.notes
    assert proposal.tags == {"model": "fake-model"}
    m = proposal.metrics
    assert m["llm_attempts"] == 1 and m["llm_input_tokens"] > 1000 and m["llm_output_tokens"] > 10
    assert m["llm_cost_usd"] == pytest.approx(
        (m["llm_input_tokens"] * 1.0 + m["llm_output_tokens"] * 2.0) / 1e6)
    assert set(proposal.artifacts) == {"llm/prompt.md", "llm/response.md"}
    assert proposal.artifacts["llm/response.md"] == GOOD
    prompt = proposal.artifacts["llm/prompt.md"]
    assert "<!-- system -->" in prompt and "STEPS = 60  # gradient steps" in prompt


def test_a_good_unified_diff_answer(env, base):
    view, recipes = base
    diff = ("Hypothesis: A smaller step is steadier.\nExpected delta: 0.002\n\n```diff\n"
            "--- a/recipe/toy.py\n+++ b/recipe/toy.py\n@@ -17,3 +17,3 @@\n"
            " STEPS = 60  # gradient steps\n-LR = 0.1  # step size\n+LR = 0.08  # step size\n"
            " MODE = \"normal\"  # normal | crash | hang | nan | tamper | environ\n```\n")
    with FakeOpenAI([diff]) as server:
        proposal = agent(server).ask(ctx(env, view, recipes))
    assert "+LR = 0.08  # step size" in proposal.diff and "unified diff edit" in proposal.notes
    assert proposal.parent_id == "r0"  # no Parent line: the best
    dry_run(env, recipes["r0"], proposal.diff)


def test_an_edit_that_does_not_apply_is_repaired_with_the_error_fed_back(env, base):
    view, recipes = base
    stale = answer("STEPS = 600  # gradient steps", "STEPS = 1200  # gradient steps")
    with FakeOpenAI([stale, GOOD]) as server:
        proposal = agent(server).ask(ctx(env, view, recipes))
        first, second = server.requests
    repair = second["messages"][-1]["content"]
    assert "the lines to replace are not in the file" in repair
    assert "STEPS = 60  # gradient steps" in repair  # the closest real line, quoted
    assert second["messages"][:2] == first["messages"]  # the cached prefix is kept
    assert second["messages"][2] == {"role": "assistant", "content": stale}
    assert "+STEPS = 120" in proposal.diff and proposal.metrics["llm_attempts"] == 2
    assert set(proposal.artifacts) == {"llm/prompt.md", "llm/response.md", "llm/prompt-2.md",
                                       "llm/response-2.md", "llm/errors.md"}
    assert "not in the file" in proposal.artifacts["llm/prompt-2.md"]
    assert proposal.metrics["llm_input_tokens"] > 2 * 1000


def json_answer(diff):
    return "```json\n" + json.dumps({
        "hypothesis": "A smaller step is steadier.", "expected_delta": 0.002, "parent": "t0000",
        "notes": "the loss oscillates.", "diff": diff}, indent=2) + "\n```\n"


def test_a_json_answer_becomes_a_diff_that_applies(env, base):
    view, recipes = base
    diff = ("--- a/recipe/toy.py\n+++ b/recipe/toy.py\n@@ -18 +18 @@\n"
            "-LR = 0.1  # step size\n+LR = 0.08  # step size\n")
    with FakeOpenAI([json_answer(diff)]) as server:
        proposal = agent(server).ask(ctx(env, view, recipes))
    assert "+LR = 0.08  # step size" in proposal.diff
    assert proposal.hypothesis == "A smaller step is steadier."
    dry_run(env, recipes["r0"], proposal.diff)


def test_the_repair_names_the_part_of_the_answer_that_was_ignored(env, base):
    view, recipes = base
    with FakeOpenAI([json_answer(["-LR = 0.1  # step size"]), GOOD]) as server:
        agent(server).ask(ctx(env, view, recipes))
        repair = server.requests[1]["messages"][-1]["content"]
    assert 'ignored: the ```json block\'s "diff" is not a string' in repair


def test_parts_ignored_in_a_used_answer_are_noted_on_the_proposal(env, base):
    view, recipes = base
    stale = "```diff\n--- a/recipe/toy.py\n+++ b/recipe/toy.py\n@@ -1 +1 @@\n-nope\n+yes\n```\n"
    with FakeOpenAI([GOOD + stale]) as server:
        proposal = agent(server).ask(ctx(env, view, recipes))
    assert "ignored: hunk 1 of the diff for recipe/toy.py: the lines to replace are not in the " \
        "file." in proposal.notes


@pytest.mark.parametrize("bad, error", [
    (answer("STEPS = 60  # gradient steps", "STEPS = = 60"), "syntax error in recipe/toy.py"),
    (answer("name: toy", "name: mine", path="autoresearch.yaml"), "not an editable file"),
    (answer("STEPS = 60  # gradient steps", "STEPS = 60  # gradient steps"), "changes nothing"),
])
def test_preflight_refusals_are_repaired_too(env, base, bad, error):
    view, recipes = base
    with FakeOpenAI([bad, GOOD]) as server:
        proposal = agent(server).ask(ctx(env, view, recipes))
        assert error in server.requests[1]["messages"][-1]["content"]
    assert "+STEPS = 120" in proposal.diff


def test_an_edit_already_tried_on_the_parent_is_sent_back(env, base):
    view, recipes = base
    tried = make_diff(recipes["r0"], {RECIPE: recipes["r0"][RECIPE].replace("= 60", "= 120")})
    children = [trial(1, "r1", label="disqualified", parent="r0", sha=diff_sha(tried))]
    lr = answer("LR = 0.1  # step size", "LR = 0.12  # step size", hypothesis="Bigger LR.")
    with FakeOpenAI([GOOD, lr]) as server:
        proposal = agent(server).ask(ctx(env, view, recipes, children))
        assert "already tried on t0000 as t0001 (disqualified)" in \
            server.requests[1]["messages"][-1]["content"]
    assert proposal.hypothesis == "Bigger LR." and "+LR = 0.12" in proposal.diff


def test_an_edit_running_on_the_parent_now_is_sent_back(env, base):
    """Parallel trials: another specialist's trial in flight counts as tried."""
    view, recipes = base
    same = make_diff(recipes["r0"], {RECIPE: recipes["r0"][RECIPE].replace("= 60", "= 120")})
    running = Trial("r1", 1, "sched", "hypothesis 1", "r0", "RUNNING", None, None, None,
                    diff_sha=diff_sha(same))
    lr = answer("LR = 0.1  # step size", "LR = 0.12  # step size", hypothesis="Bigger LR.")
    with FakeOpenAI([GOOD, lr]) as server:
        proposal = agent(server).ask(ctx(env, view, recipes, [running]))
        assert "this exact edit is running on t0000 now as t0001; propose a different one" in \
            server.requests[1]["messages"][-1]["content"]
    assert "+LR = 0.12" in proposal.diff


def test_garbage_ends_as_an_unappliable_proposal_carrying_the_raw_answers(env, base):
    view, recipes = base
    with FakeOpenAI([GARBAGE, "Still thinking.", GARBAGE]) as server:
        proposal = agent(server, max_repairs=2).ask(ctx(env, view, recipes))
        assert len(server.requests) == 3
    with pytest.raises(PreflightError):  # what the loop's preflight will say
        check_diff(env, proposal.diff)
    assert proposal.parent_id == "r0" and proposal.hypothesis.startswith("(the model stated")
    assert proposal.artifacts["llm/response-2.md"] == "Still thinking."
    assert proposal.artifacts["llm/response-3.md"] == GARBAGE
    assert proposal.artifacts["llm/errors.md"].count("holds no edit") == 3
    assert "Last repair error: the answer holds no edit" in proposal.notes
    assert proposal.metrics["llm_attempts"] == 3


def test_the_parent_is_a_kept_trial_the_model_names_else_the_best(env, base):
    _, recipes = base
    t0 = trial(0, "r0", decision=Decision.BASELINE, spec="baseline", score=2.0)
    t2 = trial(2, "r2", decision=Decision.KEEP, parent="r0", score=1.0)
    t3 = trial(3, "r3", label="crash", parent="r2")
    view = LineageView(t0, (t2, t0), (t0, t2), (t3,), (t3, t2, t0), ())
    recipes = {**recipes, "r2": {RECIPE: recipes["r0"][RECIPE].replace("= 60", "= 120")}}
    on_base = answer("LR = 0.1  # step size", "LR = 0.2  # step size", parent="t0000")
    on_crash = answer("STEPS = 120  # gradient steps", "STEPS = 90  # gradient steps",
                      parent="trial 3")
    on_baseline = on_base.replace("Parent: t0000", "Parent: the baseline")
    with FakeOpenAI([on_base, on_crash, on_baseline]) as server:
        llm = agent(server)
        first = llm.ask(ctx(env, view, recipes, number=4))
        second = llm.ask(ctx(env, view, recipes, number=5))
        third = llm.ask(ctx(env, view, recipes, number=6))
        user = server.requests[0]["messages"][1]["content"]
    assert first.parent_id == "r0" and "-STEPS" not in first.diff
    assert third.parent_id == "r0" and third.notes.startswith("the baseline stops early. [")
    assert second.parent_id == "r2" and "-STEPS = 120" in second.diff
    assert "Parent 'trial 3' is not a kept trial; built on the best, t0002." in second.notes
    # The other kept trial is shown as a diff against the best, so it can be chosen.
    assert "Other kept trials, as diffs against t0002" in user and "-STEPS = 120" in user


def test_prompt_prefixes_are_stable_for_caching(env, base, toy_env):
    (toy_env / "agents").mkdir()
    (toy_env / "agents" / "opt.md").write_text("# Specialist `opt`\n\nOwn the step size.\n")
    (toy_env / "knowledge.md").write_text("Least squares converges linearly.\n")
    view, recipes = base
    with FakeOpenAI([GOOD, GOOD.replace("120", "90"), GOOD.replace("120", "80")]) as server:
        agent(server, "opt").ask(ctx(env, view, recipes, number=1, rendered="# Lineage A\n"))
        agent(server, "sched").ask(ctx(env, view, recipes, number=2, spec="sched"))
        agent(server, "opt").ask(ctx(env, view, recipes, number=3, rendered="# Lineage B\n"))
        opt1, sched, opt2 = [[m["content"] for m in r["messages"]] for r in server.requests]
    shared = render_environment(env) + "\n\n" + PROTOCOL.read_text().strip() + "\n\n"
    assert "Least squares converges linearly." in shared
    assert opt1[0].startswith(shared) and sched[0].startswith(shared)
    assert opt1[0][len(shared):].startswith("# Specialist `opt`\n\nOwn the step size.")
    assert sched[0][len(shared):].startswith("# Specialist `sched`")  # built from `owns`
    assert opt1[0] == opt2[0]  # the whole system message: everything up to the lineage
    assert opt1[1].startswith("# Lineage A") and opt2[1].startswith("# Lineage B")


def test_an_endpoint_that_stays_down_raises_and_proposes_nothing(env, base):
    view, recipes = base
    with FakeOpenAI([Fail(503)] * 3) as server:
        llm = agent(server)
        with pytest.raises(EndpointError, match="HTTP 503"):
            llm.ask(ctx(env, view, recipes))
    assert llm.spent_usd == 0.0


def test_llm_roster_shares_one_client_and_checks_names(env, base):
    with FakeOpenAI() as server:
        settings = ClientSettings("fake-model", base_url=server.base_url)
        roster = llm_roster(env, settings, ["opt"])
        assert list(roster) == ["opt"]
        both = llm_roster(env, settings)
        assert list(both) == ["opt", "sched"] and both["opt"].client is both["sched"].client
        with pytest.raises(EnvironmentSpecError, match="no specialist 'nope'"):
            llm_roster(env, settings, ["nope"])


def test_airbench96_preambles_are_short_and_name_real_knobs():
    spec = yaml.safe_load((ROOT / "projects/airbench96/autoresearch.yaml").read_text())
    recipe = (ROOT / "projects/airbench96/recipe/airbench96.py").read_text()
    knobs = set(re.findall(r"^([A-Z][A-Z0-9_]*) = ", recipe, re.M))
    for name in spec["specialists"]:
        text = (ROOT / "projects/airbench96/agents" / f"{name}.md").read_text()
        assert len(text.split()) <= 400, name  # three minutes of reading
        for heading in ("**Goal.**", "**You may change**", "**You may not change**",
                        "**Output.**", "**Simplicity.**"):
            assert heading in text, (name, heading)
        for word in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text):
            if word.isupper():
                assert word in knobs, (name, word)
            elif "_" in word or word[0].isupper():  # a function, class or variable
                assert re.search(rf"\b{word}\b", recipe), (name, word)
    assert len(PROTOCOL.read_text().split()) <= 900


def test_llm_and_offline_specialists_share_a_campaign_recorded_in_mlflow(toy_env, store,
                                                                         tmp_path):
    env = load_environment(str(toy_env))
    with FakeOpenAI([GOOD, GARBAGE, GARBAGE, GARBAGE]) as server:
        llm = agent(server)
        agents = {"opt": llm, "sched": offline_roster(env, seed=0)["sched"]}
        settings = Settings(str(toy_env), trials=3, tracking_uri=store, workdir=tmp_path / "w")
        summary = run_campaign(settings, agents, echo=lambda line: None)
        third_prompt = server.requests[1]["messages"][1]["content"]
    by_number = {t.number: t for t in summary.trials}
    # opt kept at t1, so by payoff it has t2 too; sched, not tried yet, then gets t3
    assert [t.specialist for t in summary.trials] == ["baseline", "opt", "opt", "sched"]
    assert by_number[1].label is FailureLabel.OK and by_number[1].decision is Decision.KEEP
    assert by_number[2].label is FailureLabel.PREFLIGHT_CRASH
    assert "t0001 [opt, ok" in third_prompt  # the lineage, read back from MLflow
    client = MlflowClient(store)
    good, crashed = client.get_run(by_number[1].run_id), client.get_run(by_number[2].run_id)
    assert good.data.tags["autoresearch.agent.model"] == "fake-model"
    m = good.data.metrics
    assert m["agent.llm_input_tokens"] > 0 and m["agent.llm_output_tokens"] > 0 and m["agent.llm_attempts"] == 1
    assert m["agent.llm_cost_usd"] == pytest.approx(
        (m["agent.llm_input_tokens"] + 2 * m["agent.llm_output_tokens"]) / 1e6, rel=1e-3)
    assert {a.path for a in client.list_artifacts(good.info.run_id, "trial/llm")} == \
        {"trial/llm/prompt.md", "trial/llm/response.md"}
    assert crashed.data.metrics["agent.llm_attempts"] == 3
    assert crashed.data.tags["autoresearch.agent.model"] == "fake-model"
    raw = Path(client.download_artifacts(crashed.info.run_id, "trial/llm/response-3.md",
                                         str(tmp_path)))
    assert raw.read_text() == GARBAGE
    assert "agent.llm_cost_usd" not in client.get_run(by_number[3].run_id).data.metrics  # offline
    spent = m["agent.llm_cost_usd"] + crashed.data.metrics["agent.llm_cost_usd"]
    assert llm.spent_usd == pytest.approx(spent, rel=1e-3)
    assert client.get_run(by_number[2].run_id).data.tags[tags.LABEL] == "preflight_crash"
