"""The pass-through's model splice (wire/adapters/anthropic.py `splice_model`): for any
JSON object, however nested, spaced and escaped, the spliced bytes are the client's with
one JSON string token (the top-level model's value) replaced, and read as exactly the
parsed body with that model replaced, key order included; or the splice declines and
the body is re-serialised. A body json.dumps wrote with one plain top-level model key
and a string value is always spliced, however many `"model"` it holds elsewhere, unless
a `\\u006` escape (which could spell the key) stands anywhere in it."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xrouter_core.wire.adapters.anthropic import passthrough_body, splice_model
from xrouter_core.wire.inbound import parse_anthropic_messages

PROPERTY = settings(
    max_examples=400,
    deadline=None,  # no timed asserts: the machine is shared
    suppress_health_check=[HealthCheck.too_slow],
)

# Texts with quotes, backslashes, control characters, non-ASCII and astral characters
# (surrogates are left out: a lone one is refused by the parser), and the texts that
# look like the structure a scan could be fooled by.
TRICKS = [
    "model",
    '"model"',
    '"model": "x"',
    '\\"model\\"',
    '{"model": [',
    "]}}:,",
    "\\",
    'é"\\/\n',
    "\\u006d",
]
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20), st.sampled_from(TRICKS)
)
NAMES = st.one_of(TEXT, st.sampled_from(["claude-opus-4-1", "xrouter/frontier"]))
KEYS = st.one_of(st.sampled_from(["model", "type", "properties", "enum", *TRICKS]), TEXT)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=25,
)
INDENT = st.sampled_from([None, 0, 1, 2, "\t", " \r\n "])
SEPARATORS = st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t"), ("\r\n,", ":  ")])


@st.composite
def objects(draw: st.DrawFn) -> dict:
    """A top-level object with a string `model` at any place among nested values that
    hold `model` keys and strings of their own."""
    body = draw(st.dictionaries(KEYS, VALUES, max_size=5))
    body.pop("model", None)
    items = list(body.items())
    items.insert(draw(st.integers(0, len(items))), ("model", draw(NAMES)))
    return dict(items)


def encode(doc: dict, indent, separators, ensure_ascii: bool) -> bytes:
    text = json.dumps(doc, indent=indent, separators=separators, ensure_ascii=ensure_ascii)
    return text.encode("utf-8")


def assert_spliced_exactly(raw: bytes, spliced: bytes, new: str) -> None:
    """`spliced` is `raw` with one JSON string token, the top-level model's value,
    replaced by `new`'s (ASCII) token, and reads as the parsed body with `new` for its
    model, key order included at every level."""
    original = json.loads(raw)
    expected = {**original, "model": new}
    assert json.dumps(json.loads(spliced)) == json.dumps(expected)
    token = json.dumps(new).encode()
    at = spliced.find(token)
    while at >= 0:
        tail = spliced[at + len(token) :]
        end = len(raw) - len(tail)
        if spliced[:at] == raw[:at] and raw.endswith(tail) and end > at:
            replaced = raw[at:end]
            if replaced.startswith(b'"') and json.loads(replaced) == original["model"]:
                return
        at = spliced.find(token, at + 1)
    raise AssertionError(f"not one string token replaced: {raw!r} -> {spliced!r}")


@PROPERTY
@given(objects(), INDENT, SEPARATORS, st.booleans(), NAMES)
def test_a_written_body_is_spliced_exactly(doc, indent, separators, ascii, new):
    raw = encode(doc, indent, separators, ascii)
    spliced = splice_model(raw, json.loads(raw), new)
    if b"\\u006" in raw:  # a text such as "\\u006d" written with ensure_ascii=False
        assert spliced is None
        return
    assert spliced is not None, raw  # one plain top-level key, a string: always provable
    assert_spliced_exactly(raw, spliced, new)


@st.composite
def doubtful_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """Written bodies edited the ways a scan can get wrong: `model` spelled with a
    `\\u` escape anywhere (keys and strings alike), a duplicate top-level key (any
    spelling) before or after, a value that is not a string. (raw, what was done)"""
    doc = draw(objects())
    edit = draw(st.sampled_from(["escape", "duplicate", "not a string"]))
    if edit == "not a string":
        doc["model"] = draw(VALUES.filter(lambda value: not isinstance(value, str)))
    raw = encode(doc, draw(INDENT), draw(SEPARATORS), draw(st.booleans()))
    if edit == "escape":
        spots = [i for i in range(len(raw)) if raw.startswith(b"model", i)]
        chosen = draw(st.lists(st.sampled_from(spots), min_size=1, unique=True))
        for at in sorted(chosen, reverse=True):
            raw = raw[:at] + b"mod\\u0065l" + raw[at + len(b"model") :]
    elif edit == "duplicate":
        key = draw(st.sampled_from([b'"model"', b'"mod\\u0065l"', b'"\\u006dodel"']))
        pair = key + b":" + json.dumps(draw(VALUES)).encode()
        first = raw.index(b"{") + 1
        if draw(st.booleans()):
            raw = raw[:first] + pair + b"," + raw[first:]
        else:
            last = raw.rindex(b"}")
            raw = raw[:last] + b"," + pair + raw[last:]
    return raw, edit


@PROPERTY
@given(doubtful_bodies(), NAMES)
def test_a_doubtful_body_is_spliced_exactly_or_declined(drawn, new):
    raw, edit = drawn
    original = json.loads(raw)
    spliced = splice_model(raw, original, new)
    if edit == "duplicate" or not isinstance(original.get("model"), str):
        assert spliced is None, raw
    elif spliced is not None:  # escapes elsewhere than the top-level key: still exact
        assert_spliced_exactly(raw, spliced, new)


def test_the_client_s_spacing_and_order_survive():
    raw = b'{\n  "messages" : [ {"role":"user","content":"hi"} ],\n  "model" :\t"a\\u00e9\\"",\n  "max_tokens": 5\n}'
    sent = passthrough_body(parse_anthropic_messages(raw), "claude-é")
    assert sent == raw.replace(b'"a\\u00e9\\""', b'"claude-\\u00e9"')


def test_a_nested_model_key_and_quoted_model_stay_as_written():
    """Claude Code 2.1's shape: the Agent tool's schema has a model property, and texts
    quote `"model"`; only the top-level value changes."""
    raw = (
        b'{"model":"a","messages":[{"role":"user","content":"say \\"model\\": \\\\"}],'
        b'"tools":[{"name":"Agent","input_schema":{"type":"object","properties":'
        b'{"model":{"type":"string","enum":["a"]}}}}],"max_tokens":5}'
    )
    sent = passthrough_body(parse_anthropic_messages(raw), "b")
    assert sent == b'{"model":"b"' + raw[len(b'{"model":"a"') :]


def cases() -> list[bytes]:
    """Bodies whose top-level model key is not (or cannot be shown to be) written once
    and plainly with a string value."""
    msgs = '"messages":[{"role":"user","content":"hi"}]'
    return [
        # The top-level key escaped, a nested key written plainly, same value.
        (
            '{"mod\\u0065l":"a",' + msgs + ',"tools":[{"name":"t","input_schema":'
            '{"type":"object","properties":{"model":"a"}}}]}'
        ).encode(),
        # A duplicate top-level key, the parsed (last) one escaped.
        ('{"model":"a",' + msgs + ',"mod\\u0065l":"a"}').encode(),
        # A duplicate top-level key, both plain, same value.
        ('{"model":"a",' + msgs + ',"model":"a"}').encode(),
        # A `\u006` escape anywhere (here in a nested text) beside a second "model".
        ('{"model":"a",' + msgs + ',"tools":[{"name":"\\u006d","model":"a"}]}').encode(),
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
