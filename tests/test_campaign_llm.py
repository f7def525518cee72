"""The loop's side of LLM specialists: the campaign dollar cap and the endpoint-down pause."""

from mlflow import MlflowClient

from fake_openai import Fail, FakeOpenAI
from mlflow_autoresearch.agents.llm.client import ClientSettings
from mlflow_autoresearch.campaign import Settings, run_campaign

GOOD = ("Hypothesis: Twice the steps fit better.\nExpected delta: -0.01\nParent: t0000\n\n"
        "recipe/toy.py\n```python\n<<<<<<< SEARCH\nSTEPS = 60  # gradient steps\n=======\n"
        "STEPS = 120  # gradient steps\n>>>>>>> REPLACE\n```\n")


def _settings(toy_env, store, tmp_path, server, trials=2, **kw):
    llm = ClientSettings("fake-model", base_url=server.base_url, max_retries=1,
                         timeout_seconds=5, price_per_million=(1000.0, 1000.0))
    return Settings(str(toy_env), trials=trials, tracking_uri=store, workdir=tmp_path / "work",
                    llm=llm, llm_specialists=("opt",), **kw)


def test_the_dollar_cap_stops_the_campaign_between_turns(toy_env, store, tmp_path):
    with FakeOpenAI([GOOD]) as server:
        summary = run_campaign(_settings(toy_env, store, tmp_path, server, max_cost_usd=0.01),
                           echo=lambda line: None)
    assert [t.specialist for t in summary.trials] == ["baseline", "opt"]
    assert summary.stop_reason.startswith("LLM cost cap $0.01 reached")
    # The LLM's call is a trace on the trial it produced (the run page's Traces tab), and only
    # there.
    client = MlflowClient(store)
    baseline, trial = summary.trials
    experiment = client.get_run(trial.run_id).info.experiment_id
    traces = client.search_traces(locations=[experiment], run_id=trial.run_id)
    assert len(traces) == 1
    spans = traces[0].data.spans
    assert spans[0].name == "propose t0001 (opt)"
    assert [s.name for s in spans[1:]] == ["attempt 1"]
    assert spans[1].outputs == GOOD and spans[1].attributes["model"] == "fake-model"
    assert client.search_traces(locations=[experiment], run_id=baseline.run_id) == []


def test_an_endpoint_that_stays_down_pauses_without_losing_anything(toy_env, store, tmp_path):
    with FakeOpenAI([Fail(503)] * 4) as server:
        first = run_campaign(_settings(toy_env, store, tmp_path, server), echo=lambda line: None)
    assert first.stop_reason.startswith("paused:") and "503" in first.stop_reason
    assert [t.number for t in first.trials] == [0]  # the lost turn recorded nothing
    with FakeOpenAI([GOOD]) as server:  # the endpoint is back: the same command continues
        second = run_campaign(_settings(toy_env, store, tmp_path, server, trials=1),
                              echo=lambda line: None)
    assert [t.number for t in second.trials] == [1]
    client = MlflowClient(store)
    assert client.get_run(second.trials[0].run_id).data.tags["autoresearch.agent.model"] == "fake-model"
