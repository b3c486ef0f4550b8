"""OpenTelemetry traces: a real router (under both launchers) with
OTEL_EXPORTER_OTLP_ENDPOINT pointing at a loopback OTLP/HTTP receiver, which decodes each
POST /v1/traces with opentelemetry-proto's own classes; the span of a routed request,
streamed and not, carries the GenAI semantic-convention attributes and the router's own,
and never the prompt or the answer."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import Router, unique
from fakes import FakeServer, Recorded, Reply
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from xrouter_core.config import load_settings

SERVER = Span.SpanKind.SPAN_KIND_SERVER
CLIENT = Span.SpanKind.SPAN_KIND_CLIENT
ROUTE_TIERS = ("CHEAP", "MEDIUM", "FRONTIER")


def value_of(value: AnyValue):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, kind)


class OTLPReceiver(FakeServer):
    """An OTLP/HTTP trace receiver on 127.0.0.1: protobuf in, the spans kept decoded."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, Span, dict]] = []  # (resource attributes, span, attributes)
        self.raw: list[bytes] = []
        self.arrived = threading.Condition()
        super().__init__(self.receive)

    def receive(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/v1/traces":
            return Reply(404, b"")
        assert request.headers["content-type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(request.body)
        with self.arrived:
            self.raw.append(request.body)
            for resource_spans in export.resource_spans:
                resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: value_of(a.value) for a in span.attributes}
                        self.spans.append((resource, span, attributes))
            self.arrived.notify_all()
        body = ExportTraceServiceResponse().SerializeToString()
        return Reply(200, body, headers={"content-type": "application/x-protobuf"})

    def wait_for(self, count: int, timeout: float = 30.0) -> list[tuple[dict, Span, dict]]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.spans) < count and time.monotonic() < deadline:
                self.arrived.wait(deadline - time.monotonic())
            return list(self.spans)


@pytest.fixture
def receiver():
    server = OTLPReceiver()
    yield server
    server.close()


def ask(router: Router, prompt: str, stream: bool) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    with router.client() as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_routed_request_is_exported_as_a_span(start_router, upstreams, receiver, stream):
    upstreams.medium.cached_tokens = 6  # of the 11 prompt tokens the fake reports
    router = start_router(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": "xrouter-under-test",
            # The batch is sent every 100 ms rather than every 5 s.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    prompt = unique("a secret prompt about otters")
    answer = ask(router, prompt, stream)
    assert answer.headers["x-xrouter-decision"] == "1"

    spans = receiver.wait_for(3)
    assert len(spans) == 3, router.logs()
    resource, parent, attributes = next(s for s in spans if s[1].kind == SERVER)
    assert resource["service.name"] == "xrouter-under-test"
    assert parent.name == "chat auto"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"]
    assert attributes["gen_ai.provider.name"] == "openai_compatible"  # a loopback server
    assert attributes["gen_ai.request.model"] == "medium-model"
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 6
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 0
    assert attributes["http.response.status_code"] == 200
    assert attributes["xrouter.tier"] == "medium"
    assert attributes["xrouter.decision"] == "medium"
    assert attributes["xrouter.source"] == "llm"
    assert attributes["xrouter.score"] == pytest.approx(0.5)
    assert attributes["xrouter.fallbacks"] == 0
    assert attributes["xrouter.stream"] is stream
    assert attributes["xrouter.requested_model"] == "auto"
    if stream:
        # A passed-through OpenAI stream is not parsed for its model or finish reason.
        assert "gen_ai.response.finish_reasons" not in attributes
    else:
        assert attributes["gen_ai.response.model"] == "medium-model"
        assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
        assert attributes["gen_ai.response.id"] == answer.json()["id"]

    children = [s for s in spans if s[1] is not parent]
    assert all(s[1].trace_id == parent.trace_id for s in children)
    assert all(s[1].parent_span_id == parent.span_id for s in children)
    (classify,) = [s for s in children if s[1].name == "xrouter.classify"]
    (upstream,) = [s for s in children if s[1].kind == CLIENT]
    assert classify[2]["xrouter.source"] == "llm"
    assert upstream[1].name == "chat medium-model"
    assert upstream[2]["server.address"] == "127.0.0.1"
    assert upstream[2]["server.port"] == upstreams.medium.port
    assert parent.start_time_unix_nano <= classify[1].start_time_unix_nano
    assert classify[1].end_time_unix_nano <= upstream[1].end_time_unix_nano
    assert upstream[1].end_time_unix_nano <= parent.end_time_unix_nano
    assert parent.end_time_unix_nano > parent.start_time_unix_nano
    # Never the prompt or the answer, nor a provider key.
    exported = b"".join(receiver.raw)
    assert b"otters" not in exported
    assert b"Hello from" not in exported
    assert b"secret-000" not in exported


def test_queued_spans_are_flushed_at_shutdown(start_router, upstreams, receiver):
    """A batch not yet due (its delay is a minute) is exported when the router stops."""
    router = start_router(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    )
    ask(router, unique("flush me"), stream=True)
    router.settle()
    assert receiver.spans == []
    router.stop()
    spans = receiver.wait_for(3, timeout=5)
    assert [s[1].kind for s in spans].count(SERVER) == 1


def test_a_failed_request_is_an_error_span(start_router, upstreams, receiver):
    upstreams.medium.override = lambda request: Reply(400, {"error": {"message": "bad"}})
    router = start_router(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    )
    with router.client() as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": unique("x")}]},
        )
    assert response.status_code == 400
    spans = receiver.wait_for(3)
    _, parent, attributes = next(s for s in spans if s[1].kind == SERVER)
    assert attributes["error.type"] == "400"
    assert parent.status.code == parent.status.STATUS_CODE_ERROR


def test_a_fallback_is_on_the_span(start_router, upstreams, receiver):
    upstreams.medium.override = lambda request: Reply(503, {"error": {"message": "busy"}})
    router = start_router(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    )
    answer = ask(router, unique("fall back"), stream=False)
    assert answer.headers["x-xrouter-upstream"] == "frontier"
    spans = receiver.wait_for(3)
    _, parent, attributes = next(s for s in spans if s[1].kind == SERVER)
    assert attributes["xrouter.decision"] == "medium"
    assert attributes["xrouter.tier"] == "frontier"
    assert attributes["xrouter.fallbacks"] == 1
    assert attributes["xrouter.fallback"] == "medium:503"
    assert attributes["gen_ai.request.model"] == "frontier-model"
    assert parent.status.code != parent.status.STATUS_CODE_ERROR


def test_the_endpoint_settings(tmp_path):
    def endpoint(**env: str) -> str:
        settings = load_settings(
            {
                **{f"{tier}_BASE_URL": "http://127.0.0.1:9/v1" for tier in ROUTE_TIERS},
                "CLASSIFIER_MODE": "builtin",
                **env,
            },
            env_file=tmp_path / "none.env",
            upstreams_file=tmp_path / "none.json",
        )
        return settings.otel_traces_endpoint

    assert endpoint() == ""
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/") == (
        "http://collector:4318/v1/traces"
    )
    assert (
        endpoint(
            OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="https://traces.example/otlp/v1/traces",
        )
        == "https://traces.example/otlp/v1/traces"
    )
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318", OTEL_SDK_DISABLED="true") == ""


@pytest.mark.parametrize("endpoint", ["", "http://127.0.0.1:9"], ids=["off", "on"])
def test_opentelemetry_is_imported_only_when_an_endpoint_is_set(tmp_path, endpoint):
    """Off, the router never loads the tracing SDK or the exporter (nothing to pay for);
    on, its accounting does. (redis-py imports opentelemetry's metrics SDK by itself
    whenever the package is installed, so only the parts tracing needs are looked for.)"""
    code = (
        "import sys\n"
        "TRACING = ('opentelemetry.sdk.trace', 'opentelemetry.exporter')\n"
        "from xrouter_core.config import load_settings\n"
        "from xrouter_core.accounting.service import Accounting\n"
        "import xrouter_core.proxy.addon\n"
        f"env = {{**{{t + '_BASE_URL': 'http://127.0.0.1:9/v1' for t in {ROUTE_TIERS!r}}},"
        f" 'CLASSIFIER_MODE': 'builtin', 'XROUTER_DATA_DIR': {str(tmp_path)!r},"
        f" 'OTEL_EXPORTER_OTLP_ENDPOINT': {endpoint!r}}}\n"
        f"settings = load_settings(env, {str(tmp_path / 'no.env')!r}, {str(tmp_path / 'no.json')!r})\n"
        "accounting = Accounting(settings)\n"
        "print(accounting.tracing is not None, any(m.startswith(TRACING) for m in sys.modules))\n"
        "accounting.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout.split()
    assert out == (["True", "True"] if endpoint else ["False", "False"])
