"""SSE parsing and the stream translators, fed with arbitrary chunk boundaries."""

import json

from fakes import openai_stream

from xrouter_core.wire import canonical as ev
from xrouter_core.wire.adapters.openai import OpenAIStreamDecoder
from xrouter_core.wire.render_openai import OpenAIChunkRenderer, completion_as_sse
from xrouter_core.wire.sse import SSEParser, iter_events
from xrouter_core.wire.stream import OpenAIPassthrough, TranslatingStream


def body_of(chunks):
    return "".join(c for c in chunks if isinstance(c, str)).encode()


def split_every(data: bytes, size: int):
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_parser_handles_any_boundary_and_crlf():
    data = b'event: a\r\ndata: {"x": 1}\r\n\r\n: comment\n\ndata: line1\ndata: line2\n\n'
    for size in (1, 2, 3, 7, 1000):
        parser = SSEParser()
        events = [
            e for piece in split_every(data, size) for e in parser.feed(piece)
        ] + parser.flush()
        assert [(e.event, e.data) for e in events] == [("a", '{"x": 1}'), ("", "line1\nline2")]


def run(translator, data: bytes, size: int) -> bytes:
    pieces = [out for piece in split_every(data, size) for out in translator(piece)] + translator(
        b""
    )
    assert all(pieces), "an empty chunk would end the client's chunked body"
    return b"".join(pieces)


def test_passthrough_drops_usage_chunk_the_client_did_not_ask_for():
    upstream = body_of(
        openai_stream(["Hel", "lo"], include_usage=True, prompt_tokens=5, completion_tokens=2)
    )
    for size in (1, 5, 64, 4096):
        translator = OpenAIPassthrough(client_wants_usage=False)
        out = run(translator, upstream, size)
        payloads = [e.data for e in iter_events(out)]
        assert payloads[-1] == "[DONE]"
        chunks = [json.loads(p) for p in payloads[:-1]]
        assert all(c["choices"] for c in chunks), "the extra usage chunk must be gone"
        assert (translator.usage.prompt_tokens, translator.usage.completion_tokens) == (5, 2)


def test_passthrough_keeps_usage_chunk_when_asked():
    upstream = body_of(openai_stream(["Hi"], include_usage=True))
    translator = OpenAIPassthrough(client_wants_usage=True)
    out = run(translator, upstream, 3)
    assert out == upstream
    assert translator.usage.total_tokens == 18


def test_decoder_and_renderer_round_trip_tool_calls():
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]},
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}},
    ]
    data = (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )
    stream = TranslatingStream(OpenAIStreamDecoder(), OpenAIChunkRenderer("m", include_usage=True))
    out = run(stream, data, 4)
    rendered = [json.loads(e.data) for e in iter_events(out) if e.data != "[DONE]"]
    args = "".join(
        call["function"].get("arguments", "")
        for chunk in rendered
        for choice in chunk["choices"]
        for call in choice["delta"].get("tool_calls", [])
    )
    assert args == '{"city":"Oslo"}'
    assert rendered[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert rendered[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    assert stream.usage == ev.Usage(9, 4)


def test_completion_replayed_as_stream():
    from fakes import openai_completion

    out = completion_as_sse(openai_completion("Hello there", "m"), include_usage=False)
    events = [e.data for e in iter_events(out)]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in events[:-1])
    assert text == "Hello there"


def test_decoder_starts_each_tool_call_once_when_ids_repeat():
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
    data = b"".join(
        b"data: "
        + json.dumps(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{**call, "function": {"name": "f", "arguments": piece}}]
                        },
                    }
                ]
            }
        ).encode()
        + b"\n\n"
        for piece in ('{"a"', ":1}")
    )
    events = OpenAIStreamDecoder().feed(data)
    assert [type(e).__name__ for e in events] == [
        "Start",
        "ToolCallStart",
        "ToolCallDelta",
        "ToolCallDelta",
    ]
