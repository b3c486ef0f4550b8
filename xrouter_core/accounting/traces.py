"""OpenTelemetry traces: one span per routed request, with the GenAI semantic conventions.

On only when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set:
then, and only then, the `otel` extra (opentelemetry-sdk and its OTLP/HTTP exporter) is
imported. Off, the router never imports it and each request pays one `is None` check.

Spans are built after the answer is sent, from what the request's accounting already
knows (its start, the classifier's time, the usage), with explicit start and end times:
nothing is added to the request path itself. The parent span (kind SERVER, "chat
{model}") carries the GenAI attributes and the router's own; two children cover the
classification and the upstream call (kind CLIENT). A BatchSpanProcessor queues them and
exports from its own thread, so the event loop never waits for the collector; `close`
flushes what is queued (at shutdown, and when a reload replaces the settings).

Prompt and answer text are never put on a span."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("xrouter")

# What the GenAI conventions call the providers the router's adapters speak to; any other
# adapter name (a local engine, an OpenAI-compatible host) is reported as it is.
PROVIDER_NAMES = {
    "gemini": "gcp.gemini",
    "azure": "azure.ai.openai",
    "mistral": "mistral_ai",
    "openai_responses": "openai",
}
# The exporter's own timeout: how long a flush may wait for an unreachable collector.
EXPORT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RequestSpan:
    """One finished routed request, as the span needs it (no prompt or answer text)."""

    requested_model: str  # what the client named (often "auto" or a category)
    model: str  # what the router asked the provider for (the route's model)
    response_model: str  # what the provider says answered ("" when not known)
    provider: str
    tier: str
    decision: str
    source: str
    score: float | None
    status: int
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int
    cache_write_tokens: int
    finish_reasons: tuple[str, ...]
    response_id: str
    fallbacks: int
    fallback: str
    stream: bool
    server_address: str
    server_port: int
    classifier_ms: float
    total_ms: float
    error: str = ""


class Tracing:
    """The tracer provider of this router process: its own (not the global one, so that
    nothing else loaded into mitmproxy is changed), exporting OTLP/HTTP protobuf."""

    def __init__(self, endpoint: str, service_name: str):
        # Imported here: only a router with tracing on needs the `otel` extra.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        self.endpoint = endpoint
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S))
        )
        self.tracer = self.provider.get_tracer("xrouter")
        self.kind = SpanKind
        self.status = Status
        self.code = StatusCode
        self.in_context = set_span_in_context

    def record(self, request: RequestSpan) -> None:
        """The request's three spans, ended at once with the times they had."""
        end = time.time_ns()
        start = end - int(request.total_ms * 1e6)
        classified = min(start + int(request.classifier_ms * 1e6), end)
        operation = "chat"
        attributes = request_attributes(request)
        parent = self.tracer.start_span(
            f"{operation} {request.requested_model or request.model}",
            kind=self.kind.SERVER,
            attributes=attributes,
            start_time=start,
        )
        context = self.in_context(parent)
        classify = self.tracer.start_span(
            "xrouter.classify",
            context=context,
            kind=self.kind.INTERNAL,
            attributes={
                "xrouter.source": request.source,
                "xrouter.decision": request.decision,
                **({} if request.score is None else {"xrouter.score": request.score}),
            },
            start_time=start,
        )
        classify.end(end_time=classified)
        upstream_attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": attributes["gen_ai.provider.name"],
            "gen_ai.request.model": attributes["gen_ai.request.model"],
            "server.address": request.server_address,
            "server.port": request.server_port,
            "http.response.status_code": request.status,
        }
        if request.response_model:
            upstream_attributes["gen_ai.response.model"] = request.response_model
        upstream = self.tracer.start_span(
            f"{operation} {attributes['gen_ai.request.model']}",
            context=context,
            kind=self.kind.CLIENT,
            attributes=upstream_attributes,
            start_time=classified,
        )
        if request.status >= 400:
            description = request.error or f"HTTP {request.status}"
            for span in (upstream, parent):
                span.set_attribute("error.type", str(request.status))
                span.set_status(self.status(self.code.ERROR, description))
        upstream.end(end_time=end)
        parent.end(end_time=end)

    def close(self) -> None:
        """Export what is queued, then stop the exporter's thread."""
        try:
            self.provider.shutdown()
        except Exception as exc:  # a collector that fails at the end loses only its spans
            log.warning("OpenTelemetry: the last spans were not exported (%s)", exc)


def request_attributes(request: RequestSpan) -> dict[str, Any]:
    """The parent span's attributes: GenAI semantic conventions, then the router's own."""
    provider = PROVIDER_NAMES.get(request.provider, request.provider)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        # The name before gen_ai.provider.name, still what many backends group by.
        "gen_ai.system": provider,
        "gen_ai.request.model": request.model,
        "http.response.status_code": request.status,
        "xrouter.tier": request.tier,
        "xrouter.decision": request.decision,
        "xrouter.source": request.source,
        "xrouter.fallbacks": request.fallbacks,
        "xrouter.stream": request.stream,
    }
    if request.requested_model:
        attributes["xrouter.requested_model"] = request.requested_model
    if request.response_model:
        attributes["gen_ai.response.model"] = request.response_model
    if request.response_id:
        attributes["gen_ai.response.id"] = request.response_id
    if request.input_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = request.input_tokens
    if request.output_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = request.output_tokens
    if request.input_tokens is not None:
        attributes["gen_ai.usage.cache_read.input_tokens"] = request.cache_read_tokens
        attributes["gen_ai.usage.cache_creation.input_tokens"] = request.cache_write_tokens
    if request.finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = list(request.finish_reasons)
    if request.score is not None:
        attributes["xrouter.score"] = request.score
    if request.fallback:
        attributes["xrouter.fallback"] = request.fallback
    return attributes


def start_tracing(endpoint: str, service_name: str) -> Tracing | None:
    """Tracing, or None with one warning when the `otel` extra is not installed."""
    try:
        return Tracing(endpoint, service_name)
    except ImportError as exc:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed (%s):"
            " no traces are exported; install it with pip install 'xrouter[otel]'",
            exc.name or exc,
        )
        return None
