"""LLM calls as MLflow traces: one trace per proposal, on the trial's run, in the client's store."""

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fake_openai import FakeOpenAI, tokens
from mlflow_autoresearch.agents import AgentContext
from mlflow_autoresearch.agents.llm.agent import LLMAgent
from mlflow_autoresearch.agents.llm.client import ClientSettings, LLMClient
from mlflow_autoresearch.environment import load_environment
from mlflow_autoresearch.execution.workspace import read_editable
from mlflow_autoresearch.lineage import LineageView
from mlflow_autoresearch.records import Decision, FailureLabel, LLMCall, Trial
from mlflow_autoresearch.store._traces import record_calls

SYSTEM = {"role": "system", "content": "You propose edits."}
USER = {"role": "user", "content": "Make the loss lower."}
STALE = "Parent: t0000\n(an edit that does not apply)"
FIXED = "Parent: t0000\n(a good edit)"
TITLE = "propose t0003 (opt)"


def two_calls() -> list[LLMCall]:
    t0 = time.time() - 10
    repair = {"role": "user", "content": "That edit does not apply; try again."}
    return [LLMCall((SYSTEM, USER), STALE, "gpt-test-1", t0, 1.25, 1200, 80, 0.0013),
            LLMCall((SYSTEM, USER, {"role": "assistant", "content": STALE}, repair), FIXED,
                    "gpt-test-1", t0 + 2.0, 0.5, 1300, 60, 0.0014, "repair")]


@pytest.fixture(params=["sqlite", "server"])
def client(request, tmp_path, monkeypatch):
    """A client on a store of its own (not the global tracking URI), with a cwd holding none."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    if request.param == "sqlite":
        return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return MlflowClient(request.getfixturevalue("server"))


def ns(unix_seconds: float) -> int:
    return int(round(unix_seconds * 1e9))


def test_calls_become_one_trace_linked_to_the_run(client):
    exp = client.create_experiment("autoresearch/toy")
    run = client.create_run(exp).info.run_id
    other = client.create_run(exp).info.run_id
    calls = two_calls()
    ids = record_calls(client, exp, run, TITLE, calls)
    assert len(ids) == 1
    found = client.search_traces(locations=[exp], run_id=run)
    assert [t.info.trace_id for t in found] == ids  # readable at once: written synchronously
    assert client.search_traces(locations=[exp], run_id=other) == []
    assert list(Path().iterdir()) == []  # nothing in the cwd: the global default store unused
    trace = client.get_trace(ids[0], display=False)
    assert trace.info.experiment_id == exp and trace.info.tags["mlflow.traceName"] == TITLE
    assert trace.info.trace_metadata["mlflow.sourceRun"] == run
    assert trace.info.token_usage == {"input_tokens": 2500, "output_tokens": 140,
                                      "total_tokens": 2640}
    root, *children = sorted(trace.data.spans, key=lambda s: (s.parent_id is not None,
                                                               s.start_time_ns))
    assert root.name == TITLE and root.span_type == "AGENT" and root.parent_id is None
    assert root.inputs == {"messages": [SYSTEM, USER]} and root.outputs == FIXED
    assert {k: root.attributes[k] for k in ("input_tokens", "output_tokens", "attempts")} == \
        {"input_tokens": 2500, "output_tokens": 140, "attempts": 2}
    assert root.attributes["cost_usd"] == pytest.approx(0.0027)
    assert root.start_time_ns == ns(calls[0].started)
    assert root.end_time_ns == ns(calls[1].started + calls[1].seconds)
    assert [s.name for s in children] == ["attempt 1", "repair 2"]
    for span, call in zip(children, calls):
        assert span.span_type == "CHAT_MODEL" and span.parent_id == root.span_id
        assert span.inputs == {"messages": [dict(m) for m in call.messages]}
        assert span.outputs == call.answer
        a = span.attributes
        assert (a["model"], a["input_tokens"], a["output_tokens"], a["purpose"]) == \
            (call.model, call.input_tokens, call.output_tokens, call.purpose)
        assert a["cost_usd"] == pytest.approx(call.cost_usd)
        assert a["seconds"] == pytest.approx(call.seconds)
        assert span.start_time_ns == ns(call.started)
        assert span.end_time_ns == ns(call.started + call.seconds)


def test_no_calls_write_no_trace(store):
    client = MlflowClient(store)
    exp = client.create_experiment("autoresearch/toy")
    run = client.create_run(exp).info.run_id
    assert record_calls(client, exp, run, TITLE, []) == []
    assert client.search_traces(locations=[exp]) == []


def test_a_store_fault_warns_once_and_returns_nothing(store, capsys):
    client = MlflowClient(store)
    run = client.create_run(client.create_experiment("autoresearch/toy")).info.run_id
    assert record_calls(client, "987654", run, TITLE, two_calls()) == []  # no such experiment
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning:")]
    assert len(warnings) == 1 and TITLE in warnings[0] and run in warnings[0]


# The agent level: the real `openai` client against the loopback fake server.

RECIPE = "recipe/toy.py"


def answer(search, replace):
    return (f"Hypothesis: Twice the steps fit better.\nExpected delta: -0.01\nParent: t0000\n\n"
            f"{RECIPE}\n```python\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n"
            f">>>>>>> REPLACE\n```\n")


def test_an_llm_agent_returns_one_call_per_request(toy_env, store):
    env = load_environment(str(toy_env))
    t0 = Trial("r0", 0, "baseline", "hypothesis 0", None, "FINISHED", FailureLabel.OK, 1.0,
               Decision.BASELINE)
    view = LineageView(t0, (t0,), (t0,), (), (t0,), ())
    recipes = {"r0": read_editable(env, env.root)}
    ctx = AgentContext(env, env.specialist("opt"), 1, view, "# Lineage\n\nt0000\n",
                       lambda rid: recipes[rid], lambda rid: [])
    stale = answer("STEPS = 600  # gradient steps", "STEPS = 1200  # gradient steps")
    good = answer("STEPS = 60  # gradient steps", "STEPS = 120  # gradient steps")
    before = time.time()
    with FakeOpenAI([stale, good]) as server:
        settings = ClientSettings("fake-model", base_url=server.base_url, max_retries=0,
                                  timeout_seconds=10, price_per_million=(1.0, 2.0))
        proposal = LLMAgent("opt", LLMClient(settings)).ask(ctx)
        sent = [r["messages"] for r in server.requests]
    assert "+STEPS = 120" in proposal.diff
    calls = proposal.calls
    assert [c.purpose for c in calls] == ["propose", "repair"]
    assert [list(c.messages) for c in calls] == sent and len(sent[1]) == 4
    assert [c.answer for c in calls] == [stale, good]
    assert all(c.model == "fake-model" and c.seconds > 0 for c in calls)
    assert before <= calls[0].started <= calls[1].started <= time.time()
    for call, messages in zip(calls, sent):
        assert call.input_tokens == tokens("".join(m["content"] for m in messages))
        assert call.output_tokens == tokens(call.answer)
        assert call.cost_usd == pytest.approx((call.input_tokens + 2 * call.output_tokens) / 1e6)
    assert sum(c.input_tokens for c in calls) == proposal.metrics["llm_input_tokens"]
    client = MlflowClient(store)
    exp = client.create_experiment("autoresearch/toy")
    run = client.create_run(exp).info.run_id
    [trace_id] = record_calls(client, exp, run, TITLE, calls)
    spans = client.get_trace(trace_id, display=False).data.spans
    assert sorted(s.name for s in spans) == sorted([TITLE, "attempt 1", "repair 2"])
