"""The LLM classifier's score: the digits' probabilities, read from each engine's own
response shape, over the raw completions path and the chat path.

The fake engines below are real HTTP servers on 127.0.0.1 that answer as the engines
document it: llama-cpp-python's and vLLM's `/v1/completions` (OpenAI's legacy
`logprobs.tokens` / `top_logprobs` as a list of {token: logprob}), llama.cpp's server and
vLLM's `/v1/chat/completions` (`logprobs.content[].top_logprobs`), Ollama's
OpenAI-compatible chat, and llama.cpp's native `completion_probabilities`.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
import pytest
from fakes import FakeServer, Pause, Recorded, Reply

from xrouter_core.config import ClassifierSettings, load_settings
from xrouter_core.routing import classifier as llm
from xrouter_core.routing.classifier import LLMClassifier

# The digits' probabilities the fakes report, and the score they must give.
PROBS = {"0": 0.1, "1": 0.3, "2": 0.5}
OTHER = {"The": 0.05, "\n": 0.02}
EXPECTED = (0.5 + 0.5 * 0.3) / (0.1 + 0.3 + 0.5)


def lp(prob: float) -> float:
    return math.log(prob)


def top_dict() -> dict[str, float]:
    """Legacy completions: {token: logprob}."""
    return {token: lp(p) for token, p in {**PROBS, **OTHER}.items()}


def top_list(with_ids: bool = False) -> list[dict[str, Any]]:
    """Chat shape: [{"token", "logprob", "bytes"}], llama.cpp adds "id"."""
    out = []
    for index, (token, p) in enumerate(sorted({**PROBS, **OTHER}.items(), key=lambda x: -x[1])):
        entry: dict[str, Any] = {"token": token, "logprob": lp(p), "bytes": list(token.encode())}
        if with_ids:
            entry = {"id": 236770 + index, **entry}
        out.append(entry)
    return out


def legacy_logprobs(token: str) -> dict:
    return {
        "tokens": [token],
        "text_offset": [412],
        "token_logprobs": [lp(PROBS.get(token, 0.01))],
        "top_logprobs": [top_dict()],
    }


def chat_logprobs(token: str, with_ids: bool = False) -> dict:
    entry: dict[str, Any] = {
        "token": token,
        "logprob": lp(PROBS.get(token, 0.01)),
        "bytes": list(token.encode()),
        "top_logprobs": top_list(with_ids),
    }
    if with_ids:
        entry = {"id": 236778, **entry}
    return {"content": [entry]}


def completion_doc(model: str, text: str, logprobs: dict | None) -> dict:
    return {
        "id": "cmpl-fake",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 1, "total_tokens": 121},
    }


def chat_doc(model: str, text: str, logprobs: dict | None, fingerprint: str = "") -> dict:
    doc = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 1, "total_tokens": 121},
    }
    if fingerprint:
        doc["system_fingerprint"] = fingerprint
    return doc


def sse(doc: dict) -> str:
    return "data: " + json.dumps(doc) + "\n\n"


def completion_chunk(model: str, text: str, logprobs: dict | None, finish=None) -> str:
    return sse(
        {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}],
        }
    )


def chat_chunk(model: str, delta: dict, logprobs: dict | None, finish=None) -> str:
    return sse(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            ],
        }
    )


class Engine(FakeServer):
    """One engine: `completions` and `chat` answer their paths (None: 404 as the engine
    without that endpoint does); `tail` keeps a stream going after the digit."""

    def __init__(self, model: str, digit: str = "2", logprobs: bool = True):
        self.model = model
        self.digit = digit
        self.logprobs = logprobs
        self.has_completions = True
        self.has_chat = True
        self.tail = False
        self.shape = "legacy"  # how /v1/completions reports logprobs: legacy or content
        super().__init__(self.route)

    def bodies(self, path: str) -> list[dict]:
        return [r.json for r in self.requests if r.path == path]

    def route(self, request: Recorded) -> Reply:
        body = request.json or {}
        if request.path == "/v1/completions" and self.has_completions:
            return self.completions(body)
        if request.path == "/v1/chat/completions" and self.has_chat:
            return self.chat(body)
        return Reply(404, {"error": {"message": "Not Found", "code": 404}})

    def _tail(self, make) -> list[str | Pause]:
        chunks: list[str | Pause] = []
        if self.tail:
            for _ in range(20):
                chunks.append(Pause(0.1))
                chunks.append(make(" because"))
        return chunks

    def completions(self, body: dict) -> Reply:
        assert "prompt" in body and "messages" not in body
        logprobs = None
        if self.logprobs and body.get("logprobs"):
            logprobs = (
                legacy_logprobs(self.digit)
                if self.shape == "legacy"
                else chat_logprobs(self.digit, True)
            )
        if not body.get("stream"):
            return Reply(body=completion_doc(self.model, self.digit, logprobs))
        chunks: list[str | Pause] = [completion_chunk(self.model, self.digit, logprobs)]
        chunks += self._tail(lambda text: completion_chunk(self.model, text, None))
        chunks += [completion_chunk(self.model, "", None, "length"), "data: [DONE]\n\n"]
        return Reply(chunks=chunks)

    def chat(self, body: dict) -> Reply:
        assert body["messages"][-1]["role"] == "user"
        logprobs = None
        if self.logprobs and body.get("logprobs"):
            logprobs = chat_logprobs(self.digit, with_ids=True)
        if not body.get("stream"):
            return Reply(body=chat_doc(self.model, self.digit, logprobs))
        chunks: list[str | Pause] = [
            chat_chunk(self.model, {"role": "assistant", "content": ""}, None),
            chat_chunk(self.model, {"content": self.digit}, logprobs),
        ]
        chunks += self._tail(lambda text: chat_chunk(self.model, {"content": text}, None))
        chunks += [chat_chunk(self.model, {}, None, "stop"), "data: [DONE]\n\n"]
        return Reply(chunks=chunks)


@pytest.fixture
def engine_factory():
    engines: list[Engine] = []

    def make(model: str, **kwargs: Any) -> Engine:
        engine = Engine(model, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def classify(engine: Engine, text: str = "Design a lock-free queue.", **settings: Any):
    async def go():
        async with httpx.AsyncClient(trust_env=False) as client:
            conf = ClassifierSettings(
                base_url=settings.pop("base_url", engine.url + "/v1"),
                model=settings.pop("model", engine.model),
                **settings,
            )
            classifier = LLMClassifier(conf, client)
            decision = await classifier.classify(text)
            return classifier, decision

    return asyncio.run(go())


# ---- the raw completions path ----------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_llama_cpp_python_completions_gives_the_renormalised_score(engine_factory, stream):
    engine = engine_factory("gemma3-270m")
    classifier, decision = classify(engine, force_stream=stream)
    assert classifier.api == "completions"
    assert decision is not None and decision.source == "llm"
    assert decision.score == pytest.approx(EXPECTED)
    assert decision.tier == 2  # 0.72 ≥ 0.66
    assert "via completions" in decision.detail
    (body,) = engine.bodies("/v1/completions")
    assert engine.bodies("/v1/chat/completions") == []
    # Gemma's own chat template, the instructions in the user turn, then the answer prefix.
    assert body["prompt"].startswith("<start_of_turn>user\n")
    assert "Design a lock-free queue.<end_of_turn>\n<start_of_turn>model\nLevel: " in body["prompt"]
    assert body["prompt"].endswith("Level: ")
    assert body["logprobs"] == llm.TOP_LOGPROBS
    assert body["grammar"] == "root ::= [012]"
    assert body["guided_choice"] == ["0", "1", "2"]
    assert body["stream"] is stream


def test_vllm_completions_with_a_chatml_model(engine_factory):
    engine = engine_factory("Qwen/Qwen2.5-0.5B-Instruct", digit="1")
    classifier, decision = classify(engine, thresholds=(0.8, 0.9))
    assert classifier.api == "completions"
    assert decision.score == pytest.approx(EXPECTED)
    assert decision.tier == 0  # the configured thresholds decide, not the sampled digit
    prompt = engine.bodies("/v1/completions")[0]["prompt"]
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>assistant\nLevel: ")


def test_llama_cpp_server_completions_in_the_content_shape(engine_factory):
    engine = engine_factory("llama-3.2-1b-instruct")
    engine.shape = "content"
    _, decision = classify(engine, force_stream=False)
    assert decision.score == pytest.approx(EXPECTED)
    prompt = engine.bodies("/v1/completions")[0]["prompt"]
    assert prompt.startswith("<|start_header_id|>system<|end_header_id|>")


def test_forced_completions_for_an_unknown_model_uses_the_plain_template(engine_factory):
    engine = engine_factory("my-finetune")
    classifier, decision = classify(engine, api="completions")
    assert classifier.api == "completions"
    assert decision.score == pytest.approx(EXPECTED)
    prompt = engine.bodies("/v1/completions")[0]["prompt"]
    assert "<start_of_turn>" not in prompt and prompt.endswith("\n\nLevel: ")


def test_auto_asks_by_chat_when_the_engine_has_no_completions(engine_factory):
    engine = engine_factory("gemma-3-270m-it")
    engine.has_completions = False

    async def go():
        async with httpx.AsyncClient(trust_env=False) as client:
            conf = ClassifierSettings(base_url=engine.url, model=engine.model)
            classifier = LLMClassifier(conf, client)
            first = await classifier.classify("hello")
            second = await classifier.classify("and again")
            return classifier, first, second

    classifier, first, second = asyncio.run(go())
    assert classifier.api == "chat"
    assert first.score == pytest.approx(EXPECTED) and second.score == pytest.approx(EXPECTED)
    # One try of /v1/completions, then chat only.
    assert [r.path for r in engine.requests] == [
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/chat/completions",
    ]


def test_forced_completions_does_not_switch(engine_factory):
    engine = engine_factory("gemma3-270m")
    engine.has_completions = False
    classifier, decision = classify(engine, api="completions")
    assert decision is None and classifier.last_error == "http_404"
    assert engine.bodies("/v1/chat/completions") == []


def test_early_abort_on_the_completions_stream(engine_factory):
    engine = engine_factory("gemma3-270m")
    engine.tail = True
    _, decision = classify(engine)
    assert decision.score == pytest.approx(EXPECTED)
    # The fake was still "generating" when the classifier closed the connection.
    assert engine.client_closed.wait(10)


# ---- the chat path ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_llama_cpp_server_chat_logprobs(engine_factory, stream):
    engine = engine_factory("tiny-classifier", digit="1")
    classifier, decision = classify(engine, force_stream=stream)
    assert classifier.api == "chat"  # unknown family: the engine's own template
    assert decision.score == pytest.approx(EXPECTED)
    assert "via chat" in decision.detail
    (body,) = engine.bodies("/v1/chat/completions")
    assert body["logprobs"] is True and body["top_logprobs"] == llm.TOP_LOGPROBS
    assert body["grammar"] == "root ::= [012]"


def test_ollama_gemma_is_asked_by_chat(engine_factory):
    """Ollama's /v1/completions applies the model's template again: auto uses chat."""
    engine = engine_factory("gemma3:270m", digit="0")
    classifier, decision = classify(engine)
    assert classifier.api == "chat"
    assert engine.bodies("/v1/completions") == []
    assert decision.score == pytest.approx(EXPECTED)


def test_the_early_abort_still_applies_on_chat(engine_factory):
    engine = engine_factory("tiny-classifier")
    engine.tail = True
    _, decision = classify(engine, api="chat")
    assert decision.score == pytest.approx(EXPECTED)
    assert engine.client_closed.wait(10)


# ---- engines without logprobs ----------------------------------------------------


@pytest.mark.parametrize("digit,tier", [("0", 0), ("1", 1), ("2", 2)])
@pytest.mark.parametrize("api", ["chat", "completions"])
def test_no_logprobs_falls_back_to_the_digit(engine_factory, digit, tier, api):
    engine = engine_factory("gemma3-270m", digit=digit, logprobs=False)
    _, decision = classify(engine, api=api)
    assert decision.score == int(digit) / 2
    assert decision.tier == tier
    assert "no logprobs" in decision.detail


def test_digits_missing_from_the_top_candidates_fall_back_to_the_digit(engine_factory):
    engine = engine_factory("tiny-classifier", digit="2")

    def no_digits(request: Recorded) -> Reply:
        logprobs = {
            "content": [
                {"token": "2", "logprob": -3.0, "top_logprobs": [{"token": "The", "logprob": -0.1}]}
            ]
        }
        return Reply(body=chat_doc("tiny-classifier", "2", logprobs))

    engine.handler = no_digits
    _, decision = classify(engine, force_stream=False)
    assert decision.score == 1.0 and decision.tier == 2


# ---- reading every engine's shape ------------------------------------------------


def test_positions_read_llama_cpp_native_completion_probabilities():
    new = [
        {
            "id": 236770,
            "token": "1",
            "logprob": lp(0.3),
            "bytes": [49],
            "top_logprobs": [
                {"id": 1, "token": t, "logprob": lp(p), "bytes": []} for t, p in PROBS.items()
            ],
        }
    ]
    post_sampling = [
        {
            "id": 236770,
            "token": "1",
            "prob": 0.3,
            "top_probs": [{"id": 1, "token": t, "prob": p} for t, p in PROBS.items()],
        }
    ]
    old = [{"content": "1", "probs": [{"tok_str": t, "prob": p} for t, p in PROBS.items()]}]
    for shape in (new, post_sampling, old):
        probs = llm.answer_probs(llm.positions(shape))
        assert llm.score_of(probs) == pytest.approx(EXPECTED)


def test_digit_tokens_with_space_marks_add_up():
    probs = llm.digit_probs({"▁1": 0.2, " 1": 0.1, "Ġ2": 0.3, "12": 0.4, "0": 0.0})
    assert probs == pytest.approx({"0": 0.0, "1": 0.3, "2": 0.3})


def test_the_answer_is_the_first_digit_position():
    seen = [
        ("Level", {"Level": 0.9}),
        ("2", {"2": 0.6, "0": 0.4}),
        ("1", {"1": 1.0}),
    ]
    assert llm.answer_probs(seen) == {"0": 0.4, "1": 0.0, "2": 0.6}
    assert llm.answer_probs([("x", {"y": 1.0})]) is None


def test_family_and_urls():
    assert llm.model_family("google/gemma-3-270m-it") == "gemma"
    assert llm.model_family("Qwen/Qwen2.5-1.5B-Instruct") == "chatml"
    assert llm.model_family("Meta-Llama-3.1-8B-Instruct") == "llama3"
    assert llm.model_family("mistral-7b") is None
    assert llm.completions_url("http://h:1") == "http://h:1/v1/completions"
    assert llm.completions_url("http://h:1/v1/") == "http://h:1/v1/completions"
    assert llm.completions_url("http://h:1/v1/chat/completions") == "http://h:1/v1/completions"


def test_classifier_api_setting(tmp_path):
    files = {"env_file": tmp_path / ".env", "upstreams_file": tmp_path / "upstreams.json"}
    env = {
        "CLASSIFIER_BASE_URL": "http://127.0.0.1:9/v1",
        "MEDIUM_BASE_URL": "http://127.0.0.1:9/v1",
        "FRONTIER_BASE_URL": "http://127.0.0.1:9/v1",
    }
    assert load_settings(env, **files).classifier.api == "auto"
    assert load_settings({**env, "CLASSIFIER_API": "chat"}, **files).classifier.api == "chat"
    files["upstreams_file"].write_text(json.dumps({"classifier": {"api": "completions"}}))
    assert load_settings(env, **files).classifier.api == "completions"


def test_llama_cpp_serve_commands_name_gemmas_chat_format():
    from xrouter_core.setup import hardware, local_engines

    serve = local_engines.llamacpp_server_command("/m/gemma-3-270m-it-Q4_K_M.gguf", "/v/python")
    assert "--chat_format gemma" in serve
    assert local_engines.llamacpp_chat_format("/m/qwen2.5-0.5b.gguf") == ""
    cpu = hardware.Machine(
        cpu_model="Test CPU",
        physical_cores=8,
        logical_cores=16,
        ram_gib=32.0,
        available_ram_gib=20.0,
        os="Linux 6.1",
        arch="x86_64",
    )
    lines = hardware.describe(hardware.Report(cpu, hardware.recommend(cpu)))
    assert any("--chat_format gemma" in line for line in lines)


def test_the_probe_measures_the_llm_against_the_builtin(engine_factory, tmp_path, capsys):
    from xrouter_core.quality import llm_probe

    engine = engine_factory("gemma3-270m")
    data = tmp_path / "tiny.jsonl"
    rows = [
        {"source": "tiny", "prompt": f"question {i}", "strong": s, "weak": w}
        for i, (s, w) in enumerate([(1.0, 0.0), (1.0, 1.0), (0.5, 0.2), (0.0, 1.0)])
    ]
    data.write_text("\n".join(json.dumps(row) for row in rows))
    out = tmp_path / "probe.json"
    argv = ["--base-url", engine.url, "--model", engine.model, "--data", str(data)]
    assert llm_probe.main([*argv, "--warmup", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())["report"]
    assert report["all"]["prompts"] == 4 and report["all"]["positives"] == 2
    assert report["all"]["failed"] == 0
    assert report["all"]["llm"]["auc"] == 0.5  # the fake gives every prompt the same score
    assert len(engine.bodies("/v1/completions")) == 5  # one warm-up, four measured
    assert "| all | 4 | 2 |" in capsys.readouterr().out


def test_auc():
    from xrouter_core.quality.routing_metrics import auc

    assert auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auc([0.5, 0.5], [False, True]) == 0.5
    assert auc([0.1], [True]) is None


def test_quick_start_with_the_270m_model_lets_the_builtin_classifier_decide():
    from xrouter_core.setup import hardware, setup_plan
    from xrouter_core.setup.setup_plan import Answers, RouteAnswer

    for name in ("gemma3:270m", "gemma3-270m", "google/gemma-3-270m-it"):
        assert hardware.tiny_classifier(name)
        expected = "hybrid" if hardware.TINY_CLASSIFIER_BEATS_BUILTIN else "builtin"
        assert hardware.default_classifier_mode(name) == expected
    assert hardware.default_classifier_mode("qwen2.5:0.5b") == ""  # the router's default

    local = RouteAnswer("llama.cpp", "http://127.0.0.1:8000/v1", "", "gemma3-270m")
    frontier = RouteAnswer("openai", "https://api.openai.com/v1", "", "gpt-4.1")
    answers = Answers("quick", "local", local=local, routes={"frontier": frontier})
    answers.classifier_mode = "builtin"
    plan = setup_plan.build_plan(answers, update_env=False, current_env={})
    assert plan.upstreams["classifier"]["mode"] == "builtin"
    assert plan.upstreams["routes"]["cheap"]["base_url"] == local.base_url  # still answers cheap
    answers.classifier_mode = ""
    plan = setup_plan.build_plan(answers, update_env=False, current_env={})
    assert "mode" not in plan.upstreams["classifier"]


# ---- hybrid: where the LLM is asked, and an LLM that gives nothing usable ------------------


def hybrid_policy(fake, scope: str = "open_ended"):
    from xrouter_core.accounting.cache import MemoryCache
    from xrouter_core.routing.builtin import BuiltinClassifier
    from xrouter_core.routing.policy import Policy

    settings = ClassifierSettings(
        base_url=fake.url + "/v1", model="tiny", mode="hybrid", api="chat", hybrid_llm=scope
    )
    client = httpx.AsyncClient(trust_env=False)
    return Policy(
        LLMClassifier(settings, client),
        MemoryCache(),
        builtin=BuiltinClassifier(),
        settings=settings,
    )


def chat_request(text: str):
    from xrouter_core.wire.inbound import parse_openai_chat

    body = {"model": "xrouter/auto", "messages": [{"role": "user", "content": text}]}
    return parse_openai_chat(json.dumps(body).encode())


CLOSED_FORM = [
    "Fix this function:\n```python\ndef add(a, b):\n    return a - b\n```",
    "Solve for x: 3x + 5 = 20, and show the steps.",
    "Which planet is largest?\nA) Mars\nB) Jupiter\nC) Venus\nD) Earth",
]


def test_hybrid_asks_the_llm_about_open_ended_prompts_only():
    from fakes import FakeClassifier

    fake = FakeClassifier("2")
    try:

        async def scenario(scope):
            policy = hybrid_policy(fake, scope)
            closed = [await policy.decide(chat_request(t)) for t in CLOSED_FORM]
            open_ended = await policy.decide(
                chat_request("Write a warm toast for my sister's wedding, with one joke.")
            )
            return closed, open_ended

        closed, open_ended = asyncio.run(scenario("open_ended"))
        assert [d.source for d in closed] == ["builtin"] * 3
        assert open_ended.source == "llm" and open_ended.tier == 2
        assert fake.texts() == ["Write a warm toast for my sister's wedding, with one joke."]
        fake.requests.clear()
        closed, _ = asyncio.run(scenario("all"))
        assert [d.source for d in closed] == ["llm"] * 3 and len(fake.requests) == 4
    finally:
        fake.close()


def test_the_scope_is_a_setting_and_part_of_the_classifiers_identity(tmp_path):
    from xrouter_core.routing.policy import classifier_identity

    base = {"FRONTIER_BASE_URL": "http://127.0.0.1:9/v1", "CLASSIFIER_ENABLED": "false"}

    def load(extra):
        return load_settings(
            {**base, **extra}, env_file=tmp_path / "x.env", upstreams_file=tmp_path / "x.json"
        )

    assert load({}).classifier.hybrid_llm == "open_ended"
    every = load({"CLASSIFIER_HYBRID_LLM": "all"}).classifier
    assert every.hybrid_llm == "all"
    assert classifier_identity(every, None, None) != classifier_identity(
        load({}).classifier, None, None
    )
    with pytest.raises(Exception, match="CLASSIFIER_HYBRID_LLM must be one of open_ended, all"):
        load({"CLASSIFIER_HYBRID_LLM": "some"})


def test_an_llm_that_gives_no_digit_is_not_asked_for_a_while(monkeypatch, caplog):
    from fakes import FakeClassifier

    monkeypatch.setattr(llm, "SKIP_S", 0.3)
    fake = FakeClassifier("I think this request is moderately hard")  # never a digit
    try:
        settings = ClassifierSettings(
            base_url=fake.url + "/v1", model="tiny", mode="hybrid", api="chat"
        )

        async def scenario():
            async with httpx.AsyncClient(trust_env=False) as client:
                classifier = LLMClassifier(settings, client)
                first = [await classifier.classify(f"question {i}") for i in range(5)]
                asked_first = len(fake.requests)
                await asyncio.sleep(0.35)
                fake.digit = "1"  # the engine got better: the next request asks again
                later = await classifier.classify("question after the pause")
                return classifier, first, asked_first, later

        with caplog.at_level("WARNING", logger="xrouter.classifier"):
            classifier, first, asked_first, later = asyncio.run(scenario())
        assert first == [None] * 5
        assert asked_first == llm.SKIP_AFTER  # the 4th and 5th requests did not wait on it
        assert later is not None and later.tier == 1 and classifier.unanswered == 0
        assert any("not asked for" in r.message for r in caplog.records)
    finally:
        fake.close()
