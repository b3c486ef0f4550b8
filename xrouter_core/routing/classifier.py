"""The LLM classifier: asks a local model how hard a request is, as a score in [0, 1].

It asks for one digit, 0, 1 or 2, and reads the probabilities the engine gives for that
answer token: score = (P(2) + P(1)/2) / (P(0) + P(1) + P(2)). The configured thresholds
turn the score into a tier, as for the built-in classifier. An engine that reports no
probabilities still answers with a digit d, which scores d/2.

Two ways to ask (CLASSIFIER_API):
  completions  POST /v1/completions with a raw prompt written in the model's own chat
               template (Gemma, ChatML, Llama 3; a plain fallback otherwise), ending with
               the answer prefix "Level: ", so most of the next token's mass is on digits.
  chat         POST /v1/chat/completions with logprobs/top_logprobs.
  auto         completions when the model's family is known and the engine is not Ollama
               (its /v1/completions applies the template again), else chat; an engine
               that has no /v1/completions (404, 405, 501) is then asked by chat.
The output is constrained to one digit where the engine allows it: `grammar` (GBNF) for
llama.cpp and llama-cpp-python, `guided_choice` for vLLM; other engines ignore them.

It streams and stops at the first digit, closing the connection, so a decision
costs about one token of the classifier's time. Any failure yields None and the
policy falls back (to the built-in classifier in hybrid mode, to frontier in llm mode);
failures are logged once per cause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from xrouter_core.config import DEFAULT_THRESHOLDS, ClassifierSettings

log = logging.getLogger("xrouter.classifier")

DEFAULT_SYSTEM_PROMPT = """\
You are the routing classifier of an LLM gateway. Read the user's request and decide \
how capable a model must be to answer it well. Reply with one digit and nothing else.
0 = simple: greetings, small talk, short factual questions, simple rewording, \
translation or formatting, short summaries, yes/no questions.
1 = moderate: explanations with a few steps, everyday coding (write or fix one \
function, explain code), drafting emails or documents, extracting data, analysing a \
short text.
2 = hard: complex reasoning, mathematics or proofs, multi-step planning, \
architecture or multi-file code changes, subtle debugging, research synthesis, \
expert long-form writing, anything where a mistake is costly.
If unsure between two levels, choose the higher. Answer with the digit only."""

SOURCE = "llm"
# An engine that answers without a digit (or too late) this many times in a row is not
# asked for SKIP_S seconds: requests do not wait on a model known to give nothing usable.
# The first request after the pause asks again.
UNANSWERING = ("no_digit", "timeout")
SKIP_AFTER = 3
SKIP_S = 60.0
LOADING_MARKERS = ("loading model", "model is loading", "loading", "server busy")


@dataclass(slots=True)
class Decision:
    """Which tier (0 cheap, 1 medium, 2 frontier), who decided, and how long it took."""

    tier: int
    source: str
    ms: float = 0.0
    detail: str = ""
    score: float | None = None


class ClassifierError(Exception):
    """A classifier call that gave no decision; `cause` names the kind of failure."""

    def __init__(self, cause: str, detail: str = ""):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause


class ModelLoading(ClassifierError):
    def __init__(self, detail: str = ""):
        super().__init__("loading", detail)


def chat_url(base_url: str) -> str:
    """Accept a base URL with or without /v1, as users of every engine type it."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def completions_url(base_url: str) -> str:
    """The raw-prompt endpoint beside chat_url's."""
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base[: -len("/chat/completions")] + "/completions"
    if base.endswith("/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/completions"
    return base + "/v1/completions"


# ---- the raw completions prompt, per model family ------------------------------------

ANSWER_PREFIX = "Level: "
# No BOS token: the engines add it when they tokenize a completions prompt.
TEMPLATES: dict[str, str] = {
    "gemma": "<start_of_turn>user\n{system}\n\nRequest:\n{text}<end_of_turn>\n"
    "<start_of_turn>model\n",
    "chatml": "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n"
    "<|im_start|>assistant\n",
    "llama3": "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "generic": "{system}\n\nRequest:\n{text}\n\n",
}
# Substrings of a model name (lower case) → its family's template.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("gemma", "gemma"),
    ("qwen", "chatml"),
    ("smollm", "chatml"),
    ("hermes", "chatml"),
    ("llama-3", "llama3"),
    ("llama3", "llama3"),
    ("llama_3", "llama3"),
)
DIGIT_GRAMMAR = "root ::= [012]"
DIGITS = ("0", "1", "2")
TOP_LOGPROBS = 10
NO_COMPLETIONS = (404, 405, 501)  # the engine has no /v1/completions: ask by chat


def model_family(model: str) -> str | None:
    """The template family a model name belongs to, or None when it is not known."""
    name = model.lower()
    return next((family for key, family in FAMILIES if key in name), None)


def completions_prompt(family: str | None, system: str, text: str) -> str:
    template = TEMPLATES.get(family or "generic", TEMPLATES["generic"])
    return template.format(system=system, text=text) + ANSWER_PREFIX


def looks_like_ollama(base_url: str, model: str) -> bool:
    """Ollama's port, or its name:tag model names (gemma3:270m)."""
    return ":11434" in base_url or ":" in model


# ---- reading the digits' probabilities -------------------------------------------------

Position = tuple[str, dict[str, float]]  # (the generated token, {candidate token: probability})


def _prob(entry: Mapping[str, Any]) -> float | None:
    if isinstance(entry.get("logprob"), int | float):
        return math.exp(entry["logprob"])
    if isinstance(entry.get("prob"), int | float):
        return float(entry["prob"])
    return None


def _candidates(entries: Any) -> dict[str, float]:
    """A list of {token, logprob} / {token, prob} / {tok_str, prob}, or a {token: logprob}."""
    out: dict[str, float] = {}
    if isinstance(entries, Mapping):
        for token, logprob in entries.items():
            if isinstance(logprob, int | float):
                out[str(token)] = out.get(str(token), 0.0) + math.exp(logprob)
        return out
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, Mapping):
            continue
        token = entry.get("token", entry.get("tok_str"))
        prob = _prob(entry)
        if isinstance(token, str) and prob is not None:
            out[token] = out.get(token, 0.0) + prob
    return out


def positions(logprobs: Any) -> list[Position]:
    """Each generated token with its top candidates, from any engine's logprobs shape:

    - OpenAI chat, llama.cpp server (chat and completions), vLLM chat, Ollama's
      OpenAI-compatible chat: {"content": [{"token", "logprob", "top_logprobs": [{"token",
      "logprob"}]}]}
    - OpenAI legacy completions, vLLM and llama-cpp-python completions: {"tokens": [...],
      "token_logprobs": [...], "top_logprobs": [{token: logprob}, ...]}
    - llama.cpp's native /completion `completion_probabilities` and Ollama's native API:
      [{"token", "logprob", "top_logprobs": [...]}], [{"token", "top_probs": [{"token",
      "prob"}]}] (post-sampling) or the older [{"content", "probs": [{"tok_str", "prob"}]}]
    """
    if isinstance(logprobs, Mapping):
        if isinstance(logprobs.get("content"), list):
            return positions(logprobs["content"])
        tokens = logprobs.get("tokens")
        tops = logprobs.get("top_logprobs")
        if isinstance(tokens, list) and isinstance(tops, list):
            return [
                (str(token), _candidates(top or {}))
                for token, top in zip(tokens, tops, strict=False)
            ]
        return []
    out: list[Position] = []
    for entry in logprobs if isinstance(logprobs, list) else ():
        if not isinstance(entry, Mapping):
            continue
        token = entry.get("token", entry.get("content", ""))
        top = entry.get("top_logprobs", entry.get("top_probs", entry.get("probs")))
        candidates = _candidates(top or [])
        if not candidates and _prob(entry) is not None and isinstance(token, str):
            candidates = {token: _prob(entry) or 0.0}
        out.append((str(token) if token is not None else "", candidates))
    return out


def _digit_of(token: str) -> str | None:
    """A candidate that is exactly one digit, once the tokenizers' space marks are off."""
    bare = token.strip().lstrip("▁Ġ").strip()
    return bare if bare in DIGITS else None


def digit_probs(candidates: Mapping[str, float]) -> dict[str, float]:
    probs = dict.fromkeys(DIGITS, 0.0)
    for token, prob in candidates.items():
        digit = _digit_of(token)
        if digit is not None:
            probs[digit] += prob
    return probs


def score_of(probs: Mapping[str, float]) -> float | None:
    """(P(2) + P(1)/2) renormalised over the three digits; None without any digit mass."""
    total = sum(probs.get(d, 0.0) for d in DIGITS)
    if total <= 0:
        return None
    return (probs.get("2", 0.0) + 0.5 * probs.get("1", 0.0)) / total


def answer_probs(seen: Iterable[Position]) -> dict[str, float] | None:
    """The digits' probabilities at the answer: the first generated digit's position, or
    else the first position whose candidates hold a digit (the engine sampled something
    else, unconstrained); None when no position gives any digit a probability."""
    seen = list(seen)
    for token, candidates in seen:
        if first_digit(token) is not None:
            probs = digit_probs(candidates)
            if sum(probs.values()) > 0:
                return probs
            break
    for _, candidates in seen:
        probs = digit_probs(candidates)
        if sum(probs.values()) > 0:
            return probs
    return None


@dataclass(slots=True)
class Answer:
    """What one call gave: the digit, and the digits' probabilities when reported."""

    digit: int
    probs: dict[str, float] | None = None
    api: str = "chat"

    @property
    def score(self) -> float:
        score = score_of(self.probs) if self.probs else None
        return self.digit / 2 if score is None else score


def first_digit(text: str) -> int | None:
    for char in text:
        if char in "012":
            return int(char)
    return None


def is_loading(status: int, body: str) -> bool:
    """llama.cpp answers 503 'Loading model'; Ollama may say 'server busy' or 'loading'."""
    lowered = body.lower()
    return status == 503 or any(marker in lowered for marker in LOADING_MARKERS)


class LLMClassifier:
    def __init__(self, settings: ClassifierSettings, client: httpx.AsyncClient):
        # Imported here: builtin.py imports this module for Decision.
        from xrouter_core.routing.builtin import tier_for

        self._tier_for = tier_for
        self.settings = settings
        self.client = client
        self.url = chat_url(settings.base_url)
        self.completions_url = completions_url(settings.base_url)
        self.system_prompt = settings.system_prompt or DEFAULT_SYSTEM_PROMPT
        self.thresholds = settings.thresholds or DEFAULT_THRESHOLDS
        self.family = model_family(settings.model)
        self.api = self._pick_api()
        self.last_ok: bool | None = None
        self.last_error: str | None = None
        self._logged_causes: set[str] = set()
        self.unanswered = 0  # consecutive UNANSWERING failures
        self.skip_until = 0.0  # time.monotonic() before which the engine is not asked

    def identity(self) -> list[str]:
        """What the decision cache's keys depend on (routing/policy.py): how the engine is
        asked (completions or chat, probabilities read) counts too."""
        parts = [
            "llm-probabilities",
            self.url,
            self.settings.model,
            self.settings.api,
            self.system_prompt,
            repr(tuple(self.thresholds)),
        ]
        knobs = (self.settings.max_tokens, self.settings.temperature, self.settings.logit_bias)
        if knobs != (0, None, {}):  # the Node Xrouter's request settings
            parts.append(repr(knobs))
        return parts

    def _pick_api(self) -> str:
        api = getattr(self.settings, "api", "auto") or "auto"
        if api != "auto":
            return api
        known = self.family is not None
        ollama = looks_like_ollama(self.settings.base_url, self.settings.model)
        return "completions" if known and not ollama else "chat"

    def _constraints(self) -> dict:
        # llama.cpp / llama-cpp-python read `grammar`, vLLM `guided_choice`; others ignore both.
        return {"grammar": DIGIT_GRAMMAR, "guided_choice": list(DIGITS)}

    def _payload(self, text: str) -> dict:
        return {
            "model": self.settings.model or "default",
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": text},
            ],
            "max_tokens": 4,
            "temperature": 0,
            "stream": self.settings.force_stream,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
            **self._constraints(),
            **self._overrides(),
        }

    def _completions_payload(self, text: str) -> dict:
        return {
            "model": self.settings.model or "default",
            "prompt": completions_prompt(self.family, self.system_prompt, text),
            "max_tokens": 2,
            "temperature": 0,
            "stream": self.settings.force_stream,
            "logprobs": TOP_LOGPROBS,
            **self._constraints(),
            **self._overrides(),
        }

    def _overrides(self) -> dict:
        """CLASSIFIER_MAX_TOKENS, _TEMPERATURE, _LOGIT_BIAS (the Node Xrouter's settings),
        where set: they replace the router's own request fields."""
        fields: dict = {}
        if self.settings.max_tokens:
            fields["max_tokens"] = self.settings.max_tokens
        if self.settings.temperature is not None:
            fields["temperature"] = self.settings.temperature
        if self.settings.logit_bias:
            fields["logit_bias"] = dict(self.settings.logit_bias)
        return fields

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    async def classify(self, text: str) -> Decision | None:
        """A decision, or None after logging why there is none."""
        if time.monotonic() < self.skip_until:
            self.last_ok, self.last_error = False, "skipped"
            return None
        started = time.perf_counter()
        timeout = self.settings.timeout_ms / 1000
        try:
            answer = await asyncio.wait_for(self._classify_with_retries(text, timeout), timeout)
        except TimeoutError:
            self._failed("timeout", f"no digit within {self.settings.timeout_ms} ms")
            return None
        except ClassifierError as exc:
            self._failed(exc.cause, str(exc))
            return None
        except httpx.HTTPError as exc:
            self._failed(type(exc).__name__, str(exc) or type(exc).__name__)
            return None
        self.last_ok, self.last_error = True, None
        self.unanswered = 0
        score = answer.score
        if answer.probs:
            p = answer.probs
            total = sum(p.values()) or 1.0
            read = "p=" + "/".join(f"{p[d] / total:.2f}" for d in DIGITS)
        else:
            read = f"digit={answer.digit}, no logprobs"
        return Decision(
            self._tier_for(score, self.thresholds),
            SOURCE,
            (time.perf_counter() - started) * 1000,
            f"score={score:.3f} {read} via {answer.api}",
            score,
        )

    async def _classify_with_retries(self, text: str, budget_s: float) -> Answer:
        deadline = time.monotonic() + budget_s
        attempt = 0
        stale_retried = False
        while True:
            try:
                return await self._ask(text)
            except httpx.RemoteProtocolError:
                # A pooled keep-alive connection the engine had just closed: ask once more.
                if stale_retried:
                    raise
                stale_retried = True
            except ModelLoading:
                attempt += 1
                wait = self.settings.loading_retry_ms / 1000
                if (
                    attempt > self.settings.loading_max_retries
                    or time.monotonic() + wait >= deadline
                ):
                    raise
                await asyncio.sleep(wait)

    async def _ask(self, text: str) -> Answer:
        if self.api != "completions":
            return await self._request(self.url, self._payload(text), "chat")
        try:
            return await self._request(
                self.completions_url, self._completions_payload(text), "completions"
            )
        except ClassifierError as exc:
            if getattr(self.settings, "api", "auto") != "auto" or exc.cause not in {
                f"http_{status}" for status in NO_COMPLETIONS
            }:
                raise
        # auto: this engine has no /v1/completions; chat from now on.
        self.api = "chat"
        log.info("classifier: %s has no /v1/completions; asking by chat", self.completions_url)
        return await self._request(self.url, self._payload(text), "chat")

    async def _request(self, url: str, body: dict, api: str) -> Answer:
        payload = json.dumps(body).encode()
        if not body["stream"]:
            response = await self.client.post(url, content=payload, headers=self._headers())
            if response.status_code != 200:
                self._raise_for_status(response.status_code, response.text)
            try:
                doc = response.json()
                choice = doc["choices"][0]
                content = (choice.get("message") or {}).get("content") or choice.get("text") or ""
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                raise ClassifierError("garbage", "the answer is not a completion") from None
            digit = first_digit(content)
            if digit is None:
                raise ClassifierError("no_digit", repr(content[:40]))
            seen = positions(choice.get("logprobs")) + positions(
                doc.get("completion_probabilities")
            )
            return Answer(digit, answer_probs(seen), api)

        text_seen = ""
        seen: list[Position] = []
        async with self.client.stream(
            "POST", url, content=payload, headers=self._headers()
        ) as response:
            if response.status_code != 200:
                body_text = (await response.aread()).decode("utf-8", "replace")
                self._raise_for_status(response.status_code, body_text)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                    choice = chunk["choices"][0]
                    piece = (
                        (choice.get("delta") or choice.get("message") or {}).get("content")
                        or choice.get("text")
                        or ""
                    )
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    continue
                text_seen += piece
                seen += positions(choice.get("logprobs"))
                seen += positions(chunk.get("completion_probabilities"))
                digit = first_digit(piece)
                if digit is not None:
                    # Leaving the block closes the connection: the rest is never generated.
                    return Answer(digit, answer_probs(seen), api)
        raise ClassifierError("no_digit", repr(text_seen[:40]) if text_seen else "empty answer")

    def _raise_for_status(self, status: int, body: str) -> None:
        if is_loading(status, body):
            raise ModelLoading(f"HTTP {status}")
        raise ClassifierError(f"http_{status}", body[:200])

    def _failed(self, cause: str, detail: str) -> None:
        self.last_ok, self.last_error = False, cause
        if cause in UNANSWERING:
            self.unanswered += 1
            if self.unanswered >= SKIP_AFTER:
                self.skip_until = time.monotonic() + SKIP_S
                log.warning(
                    "classifier gave no usable answer %d times in a row (%s): not asked for "
                    "%.0f s; %s",
                    self.unanswered,
                    cause,
                    SKIP_S,
                    self._then(),
                )
        if cause not in self._logged_causes:
            self._logged_causes.add(cause)
            log.warning("classifier failed (%s): %s; %s", cause, detail, self._then())
        else:
            log.debug("classifier failed (%s): %s", cause, detail)

    def _then(self) -> str:
        if self.settings.mode == "hybrid":
            return "the built-in classifier decides"
        return "routing to frontier"

    async def warm_up(self) -> None:
        """Load the model before the first real request, waiting while it loads."""
        await asyncio.sleep(self.settings.warmup_delay_ms / 1000)
        for attempt in range(self.settings.loading_max_retries + 1):
            try:
                await asyncio.wait_for(self._ask("hi"), max(self.settings.timeout_ms / 1000, 30))
                self.last_ok = True
                log.info("classifier warmed up (%s)", self.settings.model or self.url)
                return
            except ModelLoading:
                await asyncio.sleep(self.settings.loading_retry_ms / 1000)
            except (ClassifierError, httpx.HTTPError, TimeoutError) as exc:
                self._failed(getattr(exc, "cause", type(exc).__name__), f"warm-up: {exc}")
                return
            log.debug("classifier still loading (attempt %d)", attempt + 1)

    async def keep_alive(self) -> None:
        """Ping the model so the engine does not unload it between requests."""
        interval = self.settings.keep_alive_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.wait_for(self._ask("ping"), max(self.settings.timeout_ms / 1000, 10))
            except (ClassifierError, httpx.HTTPError, TimeoutError) as exc:
                log.debug("classifier keep-alive failed: %s", exc)
