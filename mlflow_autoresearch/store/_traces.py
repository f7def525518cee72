"""An LLM specialist's requests for one proposal, as one MLflow trace on the trial's run.

One trace per proposal: a root span (the proposal) with one chat-model span per request (the
first attempt, then each repair), timed as the requests ran. The trace carries the run id in its
`mlflow.sourceRun` metadata, which is what `search_traces(run_id=...)` and the run page's Traces
tab look for.

Why not `MlflowClient.start_trace`: MLflow's tracer exports every trace to the process-global
tracking URI, not to the client's, and possibly in a background thread that logs failures
instead of raising them. The store's client has a URI of its own (a campaign's SQLite file or an
`mlflow server`), so the spans are built here with a private OpenTelemetry tracer that exports
nowhere, then written synchronously through the client's own store, in the order MLflow's exporter
uses: the spans (`log_spans`), then the trace info (`start_trace`). A trace is a courtesy: a
failure to write one (a store without span logging, such as a file store, included) prints one
line on stderr and never costs the trial.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LiveSpan, Span, SpanType, TraceInfo, TraceLocation, TraceState
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import (TRACE_SCHEMA_VERSION, TRACE_SCHEMA_VERSION_KEY,
                                     SpanAttributeKey, TraceMetadataKey, TraceTagKey)
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from ..records import LLMCall

PREVIEW_CHARS = 1000
# No span processors: spans started here are never exported by OpenTelemetry or MLflow.
_TRACER = TracerProvider(resource=Resource.get_empty()).get_tracer("mlflow_autoresearch")


def record_calls(client: MlflowClient, experiment_id: str, run_id: str, title: str,
                 calls: Sequence[LLMCall]) -> list[str]:
    """Write `calls` as one trace named `title` in `experiment_id`, linked to `run_id`, in the
    store of `client`. Returns the trace's id ([] when there are no calls, or on any failure,
    which prints one warning line on stderr instead of raising)."""
    if not calls:
        return []
    try:
        info, spans = build_trace(experiment_id, run_id, title, calls)
        tracing = TracingClient(client.tracking_uri)
        tracing.log_spans(experiment_id, spans)  # a store without span logging raises here
        return [tracing.start_trace(info).trace_id]
    except Exception as exc:  # noqa: BLE001 - a lost trace must never lose the trial
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        print(f"warning: could not record the LLM trace of {title!r} on run {run_id}: {detail}",
              file=sys.stderr)
        return []


def build_trace(experiment_id: str, run_id: str, title: str,
                calls: Sequence[LLMCall]) -> tuple[TraceInfo, list[Span]]:
    """The trace info and the finished spans (root first) of one proposal's `calls`."""
    start = min(_ns(c.started) for c in calls)
    end = max(_ns(c.started + c.seconds) for c in calls)
    tokens_in = sum(c.input_tokens for c in calls)
    tokens_out = sum(c.output_tokens for c in calls)
    inputs, answer = {"messages": list(calls[0].messages)}, calls[-1].answer
    root = _TRACER.start_span(title, context=otel_context.Context(), start_time=start)
    trace_id = f"tr-{root.context.trace_id:032x}"  # MLflow's V3 id of an OpenTelemetry trace
    _fill(root, trace_id, SpanType.AGENT, inputs, answer, {
        "input_tokens": tokens_in, "output_tokens": tokens_out,
        "cost_usd": sum(c.cost_usd for c in calls), "attempts": len(calls)})
    spans = []
    parent = otel_trace.set_span_in_context(root)
    for i, call in enumerate(calls, 1):
        name = f"{'attempt' if call.purpose == 'propose' else call.purpose} {i}"
        otel = _TRACER.start_span(name, context=parent, start_time=_ns(call.started))
        _fill(otel, trace_id, SpanType.CHAT_MODEL, {"messages": list(call.messages)},
              call.answer, {
                  "model": call.model, "input_tokens": call.input_tokens,
                  "output_tokens": call.output_tokens, "cost_usd": call.cost_usd,
                  "seconds": call.seconds, "purpose": call.purpose,
                  SpanAttributeKey.MODEL: call.model,
                  SpanAttributeKey.CHAT_USAGE: _usage(call.input_tokens, call.output_tokens),
                  SpanAttributeKey.LLM_COST: {"total_cost": call.cost_usd}})
        otel.end(end_time=_ns(call.started + call.seconds))
        spans.append(Span(otel))
    root.end(end_time=end)
    info = TraceInfo(
        trace_id=trace_id, trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=start // 1_000_000, execution_duration=(end - start) // 1_000_000,
        state=TraceState.OK, request_preview=_clip(json.dumps(inputs)),
        response_preview=_clip(answer),
        trace_metadata={TRACE_SCHEMA_VERSION_KEY: str(TRACE_SCHEMA_VERSION),
                        TraceMetadataKey.SOURCE_RUN: run_id,
                        TraceMetadataKey.TOKEN_USAGE: json.dumps(_usage(tokens_in, tokens_out))},
        tags={TraceTagKey.TRACE_NAME: title})
    return info, [Span(root), *spans]


def _fill(otel, trace_id: str, span_type: str, inputs: Any, outputs: Any,
          attributes: dict[str, Any]) -> None:
    """Fill an OpenTelemetry span through MLflow's span, so the attributes are encoded as MLflow
    reads them back."""
    span = LiveSpan(otel, trace_id, span_type)
    span.set_inputs(inputs)
    span.set_outputs(outputs)
    span.set_attributes(attributes)
    span.set_status("OK")


def _usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {"input_tokens": tokens_in, "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out}


def _ns(unix_seconds: float) -> int:
    return int(round(unix_seconds * 1e9))


def _clip(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 3] + "..."
