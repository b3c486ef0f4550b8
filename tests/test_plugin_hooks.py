"""Plugins in process: the setting's shapes, loading and its errors, the hook dispatch
(a failing hook, a tier set, Reject), response-healing's repairs, the assembled stream's
held finish in every client format, and the addon's hooks with mitmproxy's taddons (a
tier forced, a plugin loaded at a reload refused). tests/test_plugins.py does the same
on real routers."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from mitmproxy.exceptions import OptionsError
from mitmproxy.test import taddons
from test_hooks import ask, chat_flow, run_request_hook, with_router, write_env

from xrouter_core.config import ConfigError, PluginSpec, load_settings
from xrouter_core.plugins.api import PluginAnswer, PluginRequest, Reject
from xrouter_core.plugins.healing import ResponseHealing, closing_part, repaired
from xrouter_core.plugins.manager import Plugins, load_plugins
from xrouter_core.plugins.pareto import Pareto
from xrouter_core.proxy.addon import META, Xrouter
from xrouter_core.wire import canonical as ev
from xrouter_core.wire.inbound import parse_anthropic_messages, parse_openai_chat
from xrouter_core.wire.responses import parse_responses
from xrouter_core.wire.sse import SSEParser
from xrouter_core.wire.stream import AssemblingDecoder, assembling_translator

BASE = {"FRONTIER_BASE_URL": "http://127.0.0.1:9/v1", "CLASSIFIER_ENABLED": "false"}


def settings_with(tmp_path: Path, **values: str):
    return load_settings(
        environ={**BASE, **values},
        env_file=tmp_path / "none",
        upstreams_file=tmp_path / "none.json",
    )


# ---- the setting ----------------------------------------------------------------------


def test_plugins_are_read_from_a_list_a_json_list_or_upstreams_json(tmp_path: Path):
    listed = settings_with(tmp_path, XROUTER_PLUGINS="response-healing, pareto")
    assert listed.plugins == (PluginSpec("response-healing"), PluginSpec("pareto"))
    doc = {"plugins": ["response-healing", {"use": "pareto", "tier": "cheap"}]}
    upstreams = tmp_path / "upstreams.json"
    upstreams.write_text(json.dumps(doc))
    read = load_settings(environ=BASE, env_file=tmp_path / "none", upstreams_file=upstreams)
    assert read.plugins == (PluginSpec("response-healing"), PluginSpec("pareto", {"tier": "cheap"}))
    assert settings_with(tmp_path).plugins == ()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[1]", "plugins[0] must be a name, a module path or a file path, or an object"),
        ('[{"tier": "cheap"}]', "plugins[0] must be a name"),
        ("[not json", "XROUTER_PLUGINS is not a valid JSON list"),
    ],
)
def test_a_plugin_list_of_the_wrong_shape_is_a_configuration_problem(tmp_path, value, problem):
    with pytest.raises(ConfigError) as refused:
        settings_with(tmp_path, XROUTER_PLUGINS=value)
    assert any(p.startswith(problem) for p in refused.value.problems), refused.value.problems


# ---- loading --------------------------------------------------------------------------


def test_plugins_load_from_a_module_a_file_and_an_addons_list(tmp_path: Path):
    (tmp_path / "mine.py").write_text(
        "class One:\n    name = 'one'\n    def on_start(self): pass\n"
        "class Two:\n    def on_end(self): pass\n"
        "addons = [One(), Two()]\n"
    )
    plugins = load_plugins(
        [
            PluginSpec("pareto", {"tier": 1}),
            PluginSpec("xrouter_core.plugins.healing:ResponseHealing"),
            PluginSpec(str(tmp_path / "mine.py")),
            PluginSpec(str(tmp_path / "mine.py") + ":Two"),
        ]
    )
    assert plugins.names()[:3] == ["pareto", "response-healing", "one"]
    assert plugins.names()[3:] == [str(tmp_path / "mine.py"), str(tmp_path / "mine.py") + ":Two"]
    assert [name for name, _ in plugins.pre_request] == ["pareto", "response-healing"]
    assert len(plugins.on_end) == 2


@pytest.mark.parametrize(
    ("source", "use", "says"),
    [
        ("class P:\n    pass\n", "p.py:P", "P has none of the hooks on_start, pre_request"),
        (
            "class P:\n    async def post_response(self, answer): pass\n",
            "p.py:P",
            "P.post_response must be a plain function, not async",
        ),
        ("raise RuntimeError('boom')\n", "p.py:P", "failed to load (line 1): RuntimeError: boom"),
        ("x = 1\n", "p.py", "has no `addons` list"),
        ("", "no.such.module:P", "no module named 'no'"),
        ("", "not a module!", "not a module name"),
    ],
)
def test_each_plugin_that_cannot_be_loaded_is_named(tmp_path, monkeypatch, source, use, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.py").write_text(source)
    with pytest.raises(ConfigError) as refused:
        load_plugins([PluginSpec("response-healing"), PluginSpec(use)])
    [problem] = refused.value.problems
    assert problem.startswith(f"plugin {use!r} cannot be loaded: ") and says in problem


# ---- dispatch -------------------------------------------------------------------------


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def pre_request(self, request: PluginRequest) -> None:
        await asyncio.sleep(0)
        self.seen.append(request.body["messages"][0]["content"])
        request.tier = 2

    def post_response(self, answer: PluginAnswer) -> None:
        self.seen.append(answer.text or "")


class Failing:
    def pre_request(self, request: PluginRequest) -> None:
        request.tier = "cheap"
        raise RuntimeError("sk-secret-value-0099 leaked?")

    def post_response(self, answer: PluginAnswer) -> None:
        raise ValueError("bad")


class WrongTier:
    def pre_request(self, request: PluginRequest) -> None:
        request.tier = "premium"


def request_for(text: str = "hi", **extra) -> PluginRequest:
    return PluginRequest(parse_openai_chat(json.dumps(ask(text, **extra)).encode()), {})


def test_hooks_run_in_order_and_a_failing_one_is_one_line(caplog):
    recorder = Recorder()
    plugins = Plugins(
        [("failing", Failing()), ("recorder", recorder), ("wrong", WrongTier())],
        secrets=["sk-secret-value-0099"],
    )
    request = request_for("hello")
    with caplog.at_level(logging.WARNING, "xrouter.plugins"):
        asyncio.run(plugins.before(request))
    # Failing's tier was undone with its failure; the recorder's was kept, the wrong one not.
    assert request.tier == "frontier" and request.forced_by == "recorder"
    assert recorder.seen == ["hello"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "plugin failing failed in pre_request (ignored, the request goes on): "
        "RuntimeError: *** leaked?",
        "plugin wrong failed in pre_request (ignored, the request goes on): "
        "ValueError: tier 'premium' names no tier",
    ]
    answer = PluginAnswer(
        request, 200, {"choices": [{"message": {"content": "done"}}]}, "r", "frontier"
    )
    plugins.after(answer)
    assert recorder.seen == ["hello", "done"]


class Lifecycle:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def on_start(self) -> None:
        self.events.append("started")
        raise RuntimeError("late")

    def on_end(self) -> None:
        self.events.append("ended")
        raise OSError("gone")


def test_on_start_may_be_async_and_neither_end_can_stop_the_router(caplog):
    plugin = Lifecycle()
    plugins = Plugins([("life", plugin)])

    async def main() -> None:
        tasks: list[asyncio.Task] = []
        plugins.start(lambda work: tasks.append(asyncio.ensure_future(work)))
        await asyncio.gather(*tasks)
        plugins.end()

    with caplog.at_level(logging.WARNING, "xrouter.plugins"):
        asyncio.run(main())
    assert plugin.events == ["started", "ended"]
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "RuntimeError: late",
        "OSError: gone",
    ]


def test_reject_reaches_the_caller():
    pareto = Plugins([("pareto", Pareto(allow=["cheap"]))])
    request = PluginRequest(request_for().chat, {"x-xrouter-pareto": "2"})
    with pytest.raises(Reject) as refused:
        asyncio.run(pareto.before(request))
    assert refused.value.status == 403
    request = PluginRequest(request_for().chat, {"x-xrouter-pareto": "zero"})
    with pytest.raises(Reject, match="must be cheap, medium, frontier, 0, 1 or 2, not 'zero'"):
        asyncio.run(pareto.before(request))


# ---- response-healing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cut", "end"),
    [
        ('{"a": [1, 2', "]}"),
        ('{"name": "Al', '"}'),
        ('{"a": {"b": "c}"', "}}"),
        ('{"a":', "null}"),
        ('[1, {"k": "v\\', '\\"}]'),
        ('{"a": 1,', None),  # a dangling comma cannot be mended by appending
        ("Sorry, I cannot do that.", None),
    ],
)
def test_the_closing_part_completes_a_cut_json_text(cut, end):
    assert closing_part(cut) == end
    if end is not None:
        json.loads(cut + end)


def test_a_whole_answer_gets_json_repairs_reading():
    assert json.loads(repaired('```json\n{"a": 1, "b": [2, 3\n```')) == {"a": 1, "b": [2, 3]}
    assert repaired("no json here") is None


def answer_for(request: PluginRequest, text: str, streamed=False, open_stream=False):
    completion = {"choices": [{"message": {"role": "assistant", "content": text}}]}
    return PluginAnswer(request, 200, completion, "r", "cheap", streamed, open_stream=open_stream)


def test_healing_touches_only_answers_that_asked_for_json():
    healer = ResponseHealing()
    plain = request_for()
    healer.pre_request(plain)
    assert not plain.follow_stream
    answer = answer_for(plain, '{"a": 1')
    healer.post_response(answer)
    assert answer.text == '{"a": 1' and not answer.changed

    asked = request_for(response_format={"type": "json_schema", "json_schema": {"name": "x"}})
    healer.pre_request(asked)
    assert asked.follow_stream
    whole = answer_for(asked, '{"a": 1')
    healer.post_response(whole)
    assert whole.changed and json.loads(whole.text) == {"a": 1}
    valid = answer_for(asked, '{"a": 1}')
    healer.post_response(valid)
    assert not valid.changed
    streamed = answer_for(asked, '{"a": [1', streamed=True, open_stream=True)
    healer.post_response(streamed)
    assert streamed.appended == ["]}"]


def test_the_json_ask_is_seen_in_every_client_format():
    healer = ResponseHealing()
    responses = parse_responses(
        json.dumps({"input": "x", "text": {"format": {"type": "json_object"}}}).encode()
    )
    anthropic = parse_anthropic_messages(
        json.dumps(
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "output_config": {"format": {"type": "json_schema", "schema": {}}},
            }
        ).encode()
    )
    for chat in (responses, anthropic):
        request = PluginRequest(chat, {})
        healer.pre_request(request)
        assert request.follow_stream, chat.client_format


# ---- the assembled stream -------------------------------------------------------------


def openai_events(pieces: list[str]) -> bytes:
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces
    ]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )


@pytest.mark.parametrize("client", ["openai", "anthropic", "responses"])
def test_the_finish_is_held_until_the_end_and_the_added_text_goes_before_it(client):
    from xrouter_core.config import Route
    from xrouter_core.wire.adapters import adapter_for

    route = Route(tier="cheap", base_url="http://127.0.0.1:9/v1", model="m")
    if client == "anthropic":
        body = {
            "model": "m",
            "max_tokens": 9,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        }
        chat = parse_anthropic_messages(json.dumps(body).encode())
    elif client == "responses":
        chat = parse_responses(json.dumps({"input": "x", "stream": True}).encode())
    else:
        chat = parse_openai_chat(json.dumps(ask(stream=True)).encode())
    seen: list[dict] = []

    def at_end(decoder: AssemblingDecoder) -> str:
        seen.append(decoder.completion())
        return "]}"

    translator = assembling_translator(adapter_for(route), chat, "m", at_end)
    raw = openai_events(['{"a": ', "[1"])
    out = b"".join(b"".join(translator(raw[i : i + 7])) for i in range(0, len(raw), 7))
    assert not seen  # nothing asked before the provider's stream is over
    out += b"".join(translator(b""))
    [completion] = seen
    assert completion["choices"][0]["message"]["content"] == '{"a": [1'
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["completion_tokens"] == 4
    parser = SSEParser()
    events = [e for e in parser.feed(out) + parser.flush() if e.data != "[DONE]"]
    docs = [json.loads(e.data) for e in events]
    if client == "openai":
        texts = [d["choices"][0]["delta"].get("content") for d in docs if d.get("choices")]
        finish = next(i for i, d in enumerate(docs) if d["choices"][0]["finish_reason"])
        assert docs[finish - 1]["choices"][0]["delta"]["content"] == "]}"
        assert "".join(t or "" for t in texts) == '{"a": [1]}'
    elif client == "anthropic":
        kinds = [d["type"] for d in docs]
        assert docs[kinds.index("content_block_stop") - 1]["delta"]["text"] == "]}"
        assert docs[kinds.index("message_delta")]["delta"]["stop_reason"] == "max_tokens"
    else:
        deltas = [d["delta"] for d in docs if d["type"] == "response.output_text.delta"]
        assert "".join(deltas) == '{"a": [1]}'
        assert docs[-1]["type"] == "response.incomplete"


def test_a_stream_without_a_finish_gets_the_added_text_at_its_end():
    decoder = AssemblingDecoder(_ListDecoder([ev.TextDelta('{"a": "b')]), lambda d: '"}')
    assert decoder.feed(b"x") == [ev.TextDelta('{"a": "b')]
    assert decoder.finish() == [ev.TextDelta('"}')]


class _ListDecoder:
    def __init__(self, events: list) -> None:
        self.events = events

    def feed(self, chunk: bytes) -> list:
        events, self.events = self.events, []
        return events

    def finish(self) -> list:
        return []


# ---- the addon with taddons -----------------------------------------------------------


def test_a_tier_forced_by_a_plugin_asks_no_classifier(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        flow = chat_flow(
            ask("prove the Riemann hypothesis, step by step"), headers={"x-xrouter-pareto": "0"}
        )
        await run_request_hook(addon, flow)
        assert flow.response is None and flow.request.port == 8101  # cheap
        routed = flow.metadata[META]
        assert routed.decision.source == "plugin:pareto" and routed.decision.tier == 0
        bad = chat_flow(ask("hi"), headers={"x-xrouter-pareto": "cheapest"})
        await run_request_hook(addon, bad)
        assert bad.response is not None and bad.response.status_code == 400
        assert "X-Xrouter-Pareto must be" in bad.response.get_text()

    with_router(tmp_path, scenario, XROUTER_PLUGINS="pareto")


def test_no_plugin_means_no_plugin_object_on_the_request(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        flow = chat_flow(ask("hi", model="xrouter/cheap"))
        await run_request_hook(addon, flow)
        assert flow.metadata[META].plugin_request is None

    with_router(tmp_path, scenario)


def test_a_plugin_that_cannot_be_loaded_at_a_reload_is_refused(tmp_path: Path):
    async def scenario(tctx: taddons.context, addon: Xrouter) -> None:
        plugins = addon.plugins
        broken = write_env(tmp_path, "broken.env", XROUTER_PLUGINS="missing_plugin_mod:P")
        with pytest.raises(OptionsError, match="plugin 'missing_plugin_mod:P' cannot be loaded"):
            tctx.configure(addon, xrouter_env_file=str(broken))
        assert addon.plugins is plugins and plugins.names() == ["pareto"]

    with_router(tmp_path, scenario, XROUTER_PLUGINS="pareto")
