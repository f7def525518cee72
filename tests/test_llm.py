"""The openai wrapper against a real loopback server: usage, cost, retries, timeouts, failures."""

import socket
import time

import pytest

from fake_openai import FakeOpenAI, Fail, Slow
from mlflow_autoresearch.errors import AutoresearchError, ProposalError
from mlflow_autoresearch.agents.llm.client import ClientSettings, EndpointError, LLMClient, price_of

HI = [{"role": "user", "content": "hi " * 40}]


def client(server, model="fake-model", **kw):
    kw.setdefault("max_retries", 2)
    kw.setdefault("timeout_seconds", 5)
    return LLMClient(ClientSettings(model, base_url=server.base_url, **kw))


def test_reply_usage_and_cost_from_an_override_price():
    with FakeOpenAI(["Hypothesis: h"]) as server:
        llm = client(server, price_per_million=(2.0, 8.0), temperature=0.2, max_output_tokens=99)
        reply = llm.complete(HI)
    assert reply.text == "Hypothesis: h" and reply.finish_reason == "stop" and not reply.truncated
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (30, 3)
    assert reply.usage.cost_usd == pytest.approx((30 * 2.0 + 3 * 8.0) / 1e6)
    assert llm.usage == reply.usage and llm.requests == 1
    body = server.requests[0]
    assert body["model"] == "fake-model" and body["temperature"] == 0.2
    assert body["max_completion_tokens"] == 99


def test_unknown_models_cost_nothing_and_say_so():
    with FakeOpenAI(["ok"]) as server:
        reply = client(server, model="qwen2.5-coder:7b").complete(HI)
    assert reply.usage.cost_usd == 0.0 and reply.usage.input_tokens > 0
    assert "no price known for model 'qwen2.5-coder:7b'" in reply.price_note


def test_price_table_resolves_snapshots_and_provider_prefixes():
    assert price_of("gpt-4o-mini-2024-07-18") == price_of("gpt-4o-mini") != price_of("gpt-4o")
    assert price_of("openai/gpt-4.1-2025-04-14") == price_of("gpt-4.1")
    assert price_of("gpt-4o-mini", (1.0, 2.0)) == (1.0, 2.0)
    assert price_of("llama3.1:8b") is None and price_of("gpt-4oo") is None


def test_rate_limit_then_success_is_retried_by_the_client():
    with FakeOpenAI([Fail(429), "after the limit"]) as server:
        reply = client(server).complete(HI)
    assert reply.text == "after the limit" and len(server.requests) == 2


def test_an_endpoint_that_stays_down_raises_a_clear_endpoint_error():
    with FakeOpenAI([Fail(500), Fail(503), Fail(500)]) as server:
        with pytest.raises(EndpointError, match=r"kept failing with HTTP 500 after 3 attempt.*"
                                                r"run the same command again") as err:
            client(server).complete(HI)
    assert len(server.requests) == 3
    # The loop must not mistake it for "this specialist has nothing to propose".
    assert isinstance(err.value, AutoresearchError) and not isinstance(err.value, ProposalError)


def test_a_slow_answer_past_the_timeout_is_retried_then_reported():
    with FakeOpenAI([Slow(2.0, "late"), Slow(2.0, "late")]) as server:
        started = time.monotonic()
        with pytest.raises(EndpointError, match=r"did not answer within 0.2 s, 2 time"):
            client(server, timeout_seconds=0.2, max_retries=1).complete(HI)
    assert time.monotonic() - started < 1.9 and len(server.requests) == 2


def test_refused_connection_and_bad_key_are_reported_without_wasting_retries():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = LLMClient(ClientSettings("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0))
    with pytest.raises(EndpointError, match="could not be reached.*Is the server running"):
        down.complete(HI)
    with FakeOpenAI([Fail(401), "never"]) as server:
        with pytest.raises(EndpointError, match="refused the API key"):
            client(server).complete(HI)
    assert len(server.requests) == 1
    with FakeOpenAI([Fail(404)]) as server:
        with pytest.raises(EndpointError, match="Check --model and --base-url"):
            client(server).complete(HI)


def test_settings_are_explicit_and_the_environment_is_not_read(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    with pytest.raises(EndpointError, match="needs a key"):
        LLMClient(ClientSettings("gpt-4o"))
    with FakeOpenAI(["ok"]) as server:
        assert client(server).complete(HI).text == "ok"  # not the URL from the environment
    with pytest.raises(ValueError, match="name the model"):
        ClientSettings(" ")
    with pytest.raises(ValueError, match="price_per_million"):
        ClientSettings("m", price_per_million=(-1.0, 0.0))
