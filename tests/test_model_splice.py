"""The pass-through's model splice (wire/adapters/anthropic.py `splice_model`): for any
Messages body, however it is spaced and escaped, what goes upstream reads as exactly the
re-serialised body (`{**original, "model": new}`, key order included); when the splice
applies, every byte outside the model's value is the client's."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xrouter_core.wire.adapters.anthropic import passthrough_body, splice_model
from xrouter_core.wire.inbound import parse_anthropic_messages

PROPERTY = settings(
    max_examples=300,
    deadline=None,  # no timed asserts: the machine is shared
    suppress_health_check=[HealthCheck.too_slow],
)

# Model names and texts with quotes, backslashes, control characters, non-ASCII and
# astral characters (surrogates are left out: a lone one is refused by the parser).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
NAMES = st.one_of(TEXT, st.sampled_from(["claude-opus-4-1", "xrouter/frontier", 'é"\\/\n']))
INDENT = st.sampled_from([None, 0, 1, 2, "\t", " \r\n "])
SEPARATORS = st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t"), ("\r\n,", ":  ")])


@st.composite
def bodies(draw: st.DrawFn) -> tuple[dict, bool]:
    """(a Messages body, whether a nested "model" key was put in a tool schema)."""
    body: dict = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": draw(TEXT)}]},
            {"role": "assistant", "content": draw(TEXT)},
            {"role": "user", "content": draw(TEXT)},
        ],
        "max_tokens": draw(st.integers(1, 64000)),
    }
    nested = draw(st.booleans())
    properties: dict = {"path": {"type": "string", "description": draw(TEXT)}}
    if nested:
        properties["model"] = {"type": "string", "enum": [draw(NAMES)]}
    body["tools"] = [{"name": "Read", "input_schema": {"type": "object", "properties": properties}}]
    if draw(st.booleans()):
        body["system"] = [
            {"type": "text", "text": draw(TEXT), "cache_control": {"type": "ephemeral"}}
        ]
    # The client's key order: model first, last or in between.
    items = list(body.items())
    items.insert(draw(st.integers(0, len(items))), ("model", draw(NAMES)))
    return dict(items), nested


def encode(doc: dict, indent, separators, ensure_ascii: bool) -> bytes:
    return json.dumps(doc, indent=indent, separators=separators, ensure_ascii=ensure_ascii).encode(
        "utf-8"
    )


@PROPERTY
@given(bodies(), INDENT, SEPARATORS, st.booleans(), NAMES)
def test_spliced_body_reads_as_the_reserialised_one(drawn, indent, separators, ascii, new):
    doc, nested = drawn
    raw = encode(doc, indent, separators, ascii)
    request = parse_anthropic_messages(raw)
    sent = passthrough_body(request, new)
    if new == doc["model"] or not new:
        assert sent == raw
        return
    expected = {**doc, "model": new}
    # Same object, same key order at every level.
    assert json.dumps(json.loads(sent)) == json.dumps(expected)
    spliced = splice_model(raw, request.original, new)
    if nested:  # a second "model": never spliced
        assert spliced is None
    # With "model" written once (the key) and no \u006 escape anywhere, the splice applies.
    if raw.count(b"model") == 1 and b"\\u006" not in raw:
        assert spliced == sent
    if spliced is not None:  # the client's bytes on both sides of the value
        after_key = raw.index(b'"model"') + len(b'"model"')
        value = raw[after_key:].lstrip(b" \t\r\n")[1:].lstrip(b" \t\r\n")
        start = len(raw) - len(value)
        old = json.dumps(doc["model"], ensure_ascii=ascii).encode()
        assert value.startswith(old)
        assert sent == raw[:start] + json.dumps(new).encode() + value[len(old) :]


def test_the_client_s_spacing_and_order_survive():
    raw = b'{\n  "messages" : [ {"role":"user","content":"hi"} ],\n  "model" :\t"a\\u00e9\\"",\n  "max_tokens": 5\n}'
    sent = passthrough_body(parse_anthropic_messages(raw), "claude-é")
    assert sent == raw.replace(b'"a\\u00e9\\""', b'"claude-\\u00e9"')


def cases() -> list[bytes]:
    """Bodies whose one `"model"` is not (or cannot be shown to be) the top-level key's."""
    msgs = '"messages":[{"role":"user","content":"hi"}]'
    return [
        # The top-level key escaped, a nested key written plainly, same value.
        (
            '{"mod\\u0065l":"a",' + msgs + ',"tools":[{"name":"t","input_schema":'
            '{"type":"object","properties":{"model":"a"}}}]}'
        ).encode(),
        # A duplicate top-level key, the parsed (last) one escaped.
        ('{"model":"a",' + msgs + ',"mod\\u0065l":"a"}').encode(),
        # A string value ending in `"model`, beside an escaped top-level key.
        (b'{"mod\\u0065l":"a","messages":[{"role":"user","content":"say \\"model"}]}'),
        # A byte-order mark: the router's re-serialisation drops it.
        b'\xef\xbb\xbf{"model":"a",' + msgs.encode() + b"}",
        # A model of null: there is no string to replace.
        ("{" + msgs + ',"model":null}').encode(),
    ]


def test_unprovable_bodies_are_reserialised():
    for raw in cases():
        request = parse_anthropic_messages(raw)
        assert splice_model(raw, request.original, "b") is None, raw
        sent = passthrough_body(request, "b")
        assert json.loads(sent) == {**request.original, "model": "b"}
