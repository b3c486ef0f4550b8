"""Property-based tests (hypothesis) over what a client or a provider can send (issue
16, point 9): the OpenAI, Anthropic and Responses parsers, what the router does with a
parsed request (the classifier's input, each provider family's request), and the stream
decoders. Whatever the input (random JSON shapes, byte splits, invalid UTF-8, huge
numbers, deep nesting), a request is refused with a 4xx RouterError or goes on; nothing
raises anything else, which the addon would answer 500."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xrouter_core.config import Route
from xrouter_core.routing.extract import all_user_input, classifier_input
from xrouter_core.wire.adapters import adapter_for
from xrouter_core.wire.errors import RouterError
from xrouter_core.wire.inbound import (
    ChatRequest,
    _load_json_object_exactly,
    load_json_object,
    parse_anthropic_messages,
    parse_openai_chat,
)
from xrouter_core.wire.providers import PROVIDERS
from xrouter_core.wire.render_openai import OpenAIChunkRenderer
from xrouter_core.wire.responses import parse_responses
from xrouter_core.wire.stream import TranslatingStream, translator_for

FUZZ = settings(
    max_examples=200,
    deadline=None,  # no timed asserts: the machine is shared
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Keys the parsers and adapters look at, so that random documents reach deep code.
KEYS = st.sampled_from(
    [
        "model",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "stream",
        "tools",
        "system",
        "input",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "tool_calls",
        "tool_call_id",
        "function",
        "name",
        "arguments",
        "image_url",
        "url",
        "source",
        "tool_use_id",
        "id",
        "instructions",
        "previous_response_id",
        "tool_choice",
        "stream_options",
        "include_usage",
        "temperature",
        "stop",
        "response_format",
        "thinking",
        "parameters",
        "input_schema",
        "call_id",
        "output",
        "metadata",
        "data",
        "media_type",
        "cache_control",
        "reasoning",
        "text",
        "format",
        "n",
        "user",
    ]  # fmt: skip
)
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "developer", "function", "x"])
TYPES = st.sampled_from(
    [
        "text",
        "image_url",
        "image",
        "tool_use",
        "tool_result",
        "input_text",
        "output_text",
        "input_image",
        "function_call",
        "function_call_output",
        "message",
        "thinking",
        "document",
        "file",
        "input_audio",
        "function",
        "web_search",
        "json_schema",
    ]  # fmt: skip
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | ROLES
    | TYPES
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def message():
    return st.fixed_dictionaries(
        {"role": ROLES},
        optional={
            "content": VALUES
            | st.lists(
                st.fixed_dictionaries(
                    {"type": TYPES},
                    optional={
                        k: VALUES
                        for k in (
                            "text",
                            "image_url",
                            "source",
                            "content",
                            "input",
                            "id",
                            "name",
                            "tool_use_id",
                        )
                    },
                ),
                max_size=3,
            ),  # noqa: E501
            "tool_calls": VALUES,
            "tool_call_id": VALUES,
            "name": VALUES,
        },
    )


CHAT_BODIES = st.fixed_dictionaries(
    {"messages": st.lists(message(), min_size=1, max_size=4)},
    optional={
        k: VALUES
        for k in (
            "model",
            "stream",
            "tools",
            "system",
            "max_tokens",
            "tool_choice",
            "stream_options",
            "temperature",
            "response_format",
        )
    },  # noqa: E501
)
RESPONSES_BODIES = st.fixed_dictionaries(
    {"input": VALUES | st.lists(message(), max_size=3)},
    optional={
        k: VALUES
        for k in (
            "model",
            "stream",
            "tools",
            "instructions",
            "max_output_tokens",
            "tool_choice",
            "text",
            "reasoning",
        )
    },  # noqa: E501
)

ROUTES = [
    Route(tier="frontier", base_url="https://example.test/v1", model="m", provider=name)
    for name in PROVIDERS
]


def refused_or_parsed(parse, raw: bytes) -> ChatRequest | None:
    try:
        return parse(raw)
    except RouterError as exc:
        assert 400 <= exc.status < 500, exc
        assert exc.message and exc.code
        return None


def use(chat: ChatRequest) -> None:
    """What the router does with a parsed request before it is sent."""
    classifier_input(chat.messages)
    all_user_input(chat.messages)
    for route in ROUTES:
        adapter = adapter_for(route)
        try:
            adapter.build_request(route, chat, [("x-client", "1")])
        except RouterError as exc:
            assert 400 <= exc.status < 500, exc


@FUZZ
@given(CHAT_BODIES | VALUES)
def test_openai_chat_bodies(doc):
    for parse in (parse_openai_chat, parse_anthropic_messages):
        chat = refused_or_parsed(parse, json.dumps(doc).encode())
        if chat is not None:
            use(chat)


@FUZZ
@given(RESPONSES_BODIES | VALUES)
def test_responses_bodies(doc):
    chat = refused_or_parsed(parse_responses, json.dumps(doc).encode())
    if chat is not None:
        use(chat)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes(raw):
    for parse in (parse_openai_chat, parse_anthropic_messages, parse_responses):
        refused_or_parsed(parse, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"messages": [{"role": "user", "content": "x"}], "n": ' + b"9" * 5000 + b"}",
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}',
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
    ],
    ids=[
        "deep-array",
        "deep-messages",
        "huge-int",
        "huge-float",
        "nan",
        "bad-utf8",
        "lone-surrogate",
    ],  # noqa: E501
)
def test_extreme_bodies_are_4xx_or_parsed(raw):
    for parse in (parse_openai_chat, parse_anthropic_messages, parse_responses):
        chat = refused_or_parsed(parse, raw)
        if chat is not None:
            use(chat)


def outcome(load, raw: bytes) -> tuple:
    """What a loader makes of `raw`: the refusal, or the document with every value's type
    (1 and 1.0 are equal in Python, not on the wire)."""
    try:
        doc = load(raw)
    except RouterError as exc:
        return ("refused", exc.status, str(exc))

    def typed(value):
        if isinstance(value, dict):
            return ("dict", [(k, typed(v)) for k, v in value.items()])
        if isinstance(value, list):
            return ("list", [typed(v) for v in value])
        return (type(value).__name__, repr(value))

    return ("read", typed(doc))


# Numbers and text at the edges of what orjson reads as Python's json does: integers past
# 64 bits, floats past a double, surrogate escapes, alone and in pairs.
EDGES = st.sampled_from(
    [
        b"18446744073709551615",
        b"18446744073709551616",
        b"-9223372036854775809",
        b"-9223372036854775808",
        b"9223372036854775808",
        b"1e308",
        b"1e309",
        b"-0",
        b"0.1e-400",
        b'"\\ud800"',
        b'"\\udc00"',
        b'"\\ud83d\\ude00"',
        b'"\\u0000"',
        b"NaN",
        b"Infinity",
    ]
)


@FUZZ
@given(
    VALUES,
    st.booleans(),
    st.lists(st.tuples(st.integers(min_value=0), EDGES | st.binary(max_size=3)), max_size=3),
)
def test_the_fast_json_reader_reads_and_refuses_exactly_as_pythons_json(doc, ascii, edits):
    """orjson reads request bodies first; it must never accept, refuse or read a body
    differently from the exact reader (Python's json with the router's refusals)."""
    raw = json.dumps({"doc": doc}, ensure_ascii=ascii).encode()
    for at, piece in edits:  # splice edge cases and stray bytes in anywhere
        at %= len(raw) + 1
        raw = raw[:at] + piece + raw[at:]
    assert outcome(load_json_object, raw) == outcome(_load_json_object_exactly, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"n": 18446744073709551616}',
        b'{"n": 123456789012345678901234567890}',
        b'{"t": 1e999}',
        b'{"t": NaN}',
        b'{"s": "\\ud800"}',
        b"\xef\xbb\xbf{}",
        b'{"a": 1, "a": 2}',
        b"[1]",
        b"{" * 2000,
    ],
)
def test_edge_bodies_are_read_exactly(raw):
    assert outcome(load_json_object, raw) == outcome(_load_json_object_exactly, raw)


# ---- stream decoders: provider bytes in any chunking ---------------------------------

SSE_LINES = st.sampled_from(
    [
        b"data: [DONE]\n\n",
        b'data: {"choices":[{"delta":{"content":"hi"},"index":0}]}\n\n',
        b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{"}}]}}]}\n\n',  # noqa: E501
        b'data: {"usage":{"prompt_tokens":3,"completion_tokens":99999999999999999999}}\n\n',
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":1}}}\n\n',  # noqa: E501
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}\n\n',  # noqa: E501
        b'data: {"type":"content-delta","delta":{"message":{"content":{"text":"x"}}}}\n\n',
        b'data: {"candidates":[{"content":{"parts":[{"text":"x"}]}}]}\n\n',
        b'data: {"error": {"message": "x"}}\n\n',
        b"data: not json\n\n",
        b": keep-alive\n\n",
        b"\xff\xfe\xfd\n\n",
        b"data: " + b"[" * 3000 + b"\n\n",
        b'data: {"choices": null}\n\n',
        b"data: 1e999\n\n",
        b"\r\n",
        b"[{",
        b'{"candidates": [',
    ]
)


@FUZZ
@given(
    st.lists(SSE_LINES | st.binary(max_size=40), max_size=12),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=8),
)
def test_stream_decoders_never_raise(pieces, cuts):
    body = b"".join(pieces)
    chunks, at, index = [], 0, 0
    while at < len(body):
        size = cuts[index % len(cuts)]
        chunks.append(body[at : at + size])
        at, index = at + size, index + 1
    for route in ROUTES:
        adapter = adapter_for(route)

        def made(adapter=adapter) -> list:
            translators = []
            if hasattr(type(adapter), "stream_decoder") and not adapter.responses_wire:
                renderer = OpenAIChunkRenderer("m", include_usage=True)
                translators.append(TranslatingStream(adapter.stream_decoder(), renderer))
            chat = parse_openai_chat(
                b'{"messages": [{"role": "user", "content": "x"}], "stream": true}'
            )
            translators.append(translator_for(adapter, chat, "m"))
            anthropic = parse_anthropic_messages(
                b'{"model": "m", "max_tokens": 5, "stream": true,'
                b' "messages": [{"role": "user", "content": "x"}]}'
            )
            translators.append(translator_for(adapter, anthropic, "m"))
            return translators

        for translator in made():
            for chunk in chunks:
                out = translator(chunk)
                assert all(isinstance(part, bytes) and part for part in out)
            translator(b"")  # the end of the stream
        # A client that leaves anywhere: the translator is asked about it, and says.
        for translator in made():
            finished: list[object] = []
            translator.on_finish = finished.append
            for chunk in chunks[: len(chunks) // 2]:
                translator(chunk)
            assert isinstance(translator.abandon(), bool)
            assert translator.on_finish is None and finished == []
