"""The thin wrapper around the `openai` client: construction, retries, timeouts, usage and cost.

Any OpenAI-compatible chat-completions endpoint works: OpenAI itself, or a local vLLM, Ollama or
llama.cpp server (`base_url`). Settings arrive explicitly (the CLI reads `OPENAI_API_KEY` and
`OPENAI_BASE_URL`); nothing here reads the environment. Retries and timeouts are configured here
and nowhere else: the client's own retries back off exponentially (0.5 s doubling to 8 s, honouring
`Retry-After` up to two minutes) on 408, 409, 429, 5xx, timeouts and refused connections. An
endpoint that still fails raises `EndpointError`, which the loop turns into a pause: no trial is
recorded for the lost turn, so running the same command again continues the campaign.

Costs come from a small table of list prices in dollars per million tokens, or from an explicit
override; a model with no known price costs 0, and the reply says so. Cached input tokens are
charged at the full input price, so a recorded cost is an upper bound.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import openai

from ...errors import AutoresearchError

OPENAI_BASE_URL = "https://api.openai.com/v1"
KEYLESS = "no-key"  # local servers ignore the key, but the client refuses to start without one


# List prices in dollars per million (input, output) tokens, standard tier, as published by OpenAI
# in 2025. Prices change: check your provider and pass `price_per_million` to override.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}

_log = logging.getLogger(__name__)


class EndpointError(AutoresearchError):
    """The LLM endpoint failed after the client's retries, or refused the request outright.

    Not a ProposalError: the loop must not treat it as "this specialist has nothing to propose".
    Nothing was recorded for the turn; fix the endpoint and run the same command again.
    """


@dataclass(frozen=True)
class ClientSettings:
    """How to reach one OpenAI-compatible endpoint; built once by the CLI."""

    model: str                               # e.g. gpt-4.1-mini, or the name a local server serves
    base_url: str | None = None              # None: the OpenAI API
    api_key: str | None = field(default=None, repr=False)  # None: only with a base_url (local)
    timeout_seconds: float = 600.0           # per request, generation included
    connect_timeout_seconds: float = 10.0
    max_retries: int = 6                     # the client's own retries (about 30 s of backoff)
    temperature: float | None = None         # None: the server's default (reasoning models need it)
    max_output_tokens: int | None = None     # sent as max_completion_tokens when set
    price_per_million: tuple[float, float] | None = None  # $ per 1M (input, output); over PRICES

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("name the model (--model)")
        if self.timeout_seconds <= 0 or self.connect_timeout_seconds <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.price_per_million is not None and (
                len(self.price_per_million) != 2 or min(self.price_per_million) < 0):
            raise ValueError("price_per_million is (input, output) dollars, both >= 0")


def price_of(model: str, override: tuple[float, float] | None = None
             ) -> tuple[float, float] | None:
    """Dollars per million (input, output) tokens: the override, else the table, else None.

    Dated snapshots and provider prefixes resolve to their family (`openai/gpt-4o-2024-08-06`
    is priced as `gpt-4o`); the longest matching family wins (`gpt-4o-mini` over `gpt-4o`).
    """
    if override is not None:
        return (float(override[0]), float(override[1]))
    name = model.rsplit("/", 1)[-1].lower()
    families = [f for f in PRICES if name == f or name.startswith(f + "-")]
    return PRICES[max(families, key=len)] if families else None


@dataclass(frozen=True)
class Usage:
    """Tokens and dollars of one or more requests."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens,
                     self.output_tokens + other.output_tokens,
                     self.cached_input_tokens + other.cached_input_tokens,
                     self.cost_usd + other.cost_usd)


@dataclass(frozen=True)
class Reply:
    """One answer: its text, why it ended, what it cost, and how long it took."""

    text: str
    finish_reason: str
    usage: Usage
    seconds: float
    model: str            # as the server reports it (a dated snapshot, a local file name, ...)
    price_note: str = ""  # set when the cost is not from a known price

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class LLMClient:
    """One endpoint and model; `complete` sends a chat and returns the reply with its cost.

    Not thread-safe for the running totals; the loop proposes one trial at a time.
    """

    def __init__(self, settings: ClientSettings):
        if settings.api_key is None and settings.base_url is None:
            raise EndpointError("the OpenAI API needs a key: set OPENAI_API_KEY (or --api-key), "
                                "or point --base-url at a local OpenAI-compatible server")
        self.settings = settings
        self.base_url = settings.base_url or OPENAI_BASE_URL
        self.price = price_of(settings.model, settings.price_per_million)
        # Every argument explicit, so the client never falls back to environment variables
        # for the key or the URL.
        self._client = openai.OpenAI(
            api_key=settings.api_key or KEYLESS, base_url=self.base_url,
            timeout=openai.Timeout(settings.timeout_seconds,
                                   connect=settings.connect_timeout_seconds),
            max_retries=settings.max_retries)
        self.usage = Usage()     # everything this client spent, all specialists together
        self.requests = 0

    @property
    def model(self) -> str:
        return self.settings.model

    def complete(self, messages: list[dict[str, str]]) -> Reply:
        """Send `messages` (role/content dicts) and return the first choice.

        Raises:
            EndpointError: the endpoint stayed down (timeouts, refused connections, 429 and 5xx
                after every retry), or refused the request (bad key, unknown model, bad request).
        """
        extra: dict = {}
        if self.settings.temperature is not None:
            extra["temperature"] = self.settings.temperature
        if self.settings.max_output_tokens is not None:
            extra["max_completion_tokens"] = self.settings.max_output_tokens
        started = time.monotonic()
        try:
            response = self._client.chat.completions.create(
                model=self.settings.model, messages=messages, **extra)
        except openai.APIError as exc:
            raise EndpointError(self._explain(exc)) from exc
        seconds = time.monotonic() - started
        if not response.choices:
            raise EndpointError(f"the LLM endpoint at {self.base_url} answered with no choices "
                                f"for model {self.model!r}")
        choice = response.choices[0]
        usage, note = self._usage(response.usage)
        self.usage += usage
        self.requests += 1
        return Reply(choice.message.content or "", choice.finish_reason or "", usage, seconds,
                     response.model or self.model, note)

    def _usage(self, raw) -> tuple[Usage, str]:
        if raw is None:
            return Usage(), f"the endpoint reported no token usage for {self.model}; cost 0"
        tokens_in, tokens_out = int(raw.prompt_tokens or 0), int(raw.completion_tokens or 0)
        details = getattr(raw, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        if self.price is None:
            note = (f"no price known for model {self.model!r}: cost recorded as 0 "
                    f"(pass a price per million tokens to count it)")
            if self.requests == 0:
                _log.warning(note)
            return Usage(tokens_in, tokens_out, cached, 0.0), note
        cost = (tokens_in * self.price[0] + tokens_out * self.price[1]) / 1e6
        return Usage(tokens_in, tokens_out, cached, cost), ""

    def _explain(self, exc: openai.APIError) -> str:
        where = f"the LLM endpoint at {self.base_url} (model {self.model!r})"
        tries = self.settings.max_retries + 1
        again = ("Nothing was recorded for this turn; run the same command again to continue "
                 "the campaign.")
        if isinstance(exc, openai.APITimeoutError):
            return (f"{where} did not answer within {self.settings.timeout_seconds:g} s, "
                    f"{tries} time(s). Is the server overloaded? Raise the timeout for slow "
                    f"local models. {again}")
        if isinstance(exc, openai.APIConnectionError):
            return (f"{where} could not be reached after {tries} attempt(s) ({exc}). Is the "
                    f"server running, and is --base-url right? {again}")
        status = getattr(exc, "status_code", None)
        detail = " ".join(str(getattr(exc, "message", exc)).split())[:300]
        if status in (401, 403):
            return f"{where} refused the API key (HTTP {status}: {detail}). Check OPENAI_API_KEY."
        if status == 404:
            return (f"{where} does not know this model or route (HTTP 404: {detail}). Check "
                    f"--model and --base-url (it usually ends in /v1).")
        if status == 429 or (status is not None and status >= 500):
            return (f"{where} kept failing with HTTP {status} after {tries} attempt(s): "
                    f"{detail}. {again}")
        return f"{where} rejected the request (HTTP {status}: {detail})."
