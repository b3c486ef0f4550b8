"""The LLM classifier: asks a local OpenAI-compatible model for 0, 1 or 2.

It streams and stops at the first digit, closing the connection, so a decision
costs about one token of the classifier's time. Any failure yields None and the
policy falls back (to the built-in classifier in hybrid mode, to frontier in llm mode);
failures are logged once per cause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

import httpx

from xrouter_core.config import ClassifierSettings

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
        self.settings = settings
        self.client = client
        self.url = chat_url(settings.base_url)
        self.system_prompt = settings.system_prompt or DEFAULT_SYSTEM_PROMPT
        self.last_ok: bool | None = None
        self.last_error: str | None = None
        self._logged_causes: set[str] = set()

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
        }

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    async def classify(self, text: str) -> Decision | None:
        """A decision, or None after logging why there is none."""
        started = time.perf_counter()
        timeout = self.settings.timeout_ms / 1000
        try:
            tier = await asyncio.wait_for(self._classify_with_retries(text, timeout), timeout)
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
        return Decision(tier, SOURCE, (time.perf_counter() - started) * 1000)

    async def _classify_with_retries(self, text: str, budget_s: float) -> int:
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

    async def _ask(self, text: str) -> int:
        payload = json.dumps(self._payload(text)).encode()
        if not self.settings.force_stream:
            response = await self.client.post(self.url, content=payload, headers=self._headers())
            if response.status_code != 200:
                self._raise_for_status(response.status_code, response.text)
            try:
                content = response.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                raise ClassifierError("garbage", "the answer is not a chat completion") from None
            digit = first_digit(content)
            if digit is None:
                raise ClassifierError("no_digit", repr(content[:40]))
            return digit

        seen = ""
        async with self.client.stream(
            "POST", self.url, content=payload, headers=self._headers()
        ) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode("utf-8", "replace")
                self._raise_for_status(response.status_code, body)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                    choice = chunk["choices"][0]
                    piece = (choice.get("delta") or choice.get("message") or {}).get(
                        "content"
                    ) or ""
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    continue
                seen += piece
                digit = first_digit(piece)
                if digit is not None:
                    # Leaving the block closes the connection: the rest is never generated.
                    return digit
        raise ClassifierError("no_digit", repr(seen[:40]) if seen else "empty answer")

    def _raise_for_status(self, status: int, body: str) -> None:
        if is_loading(status, body):
            raise ModelLoading(f"HTTP {status}")
        raise ClassifierError(f"http_{status}", body[:200])

    def _failed(self, cause: str, detail: str) -> None:
        self.last_ok, self.last_error = False, cause
        if cause not in self._logged_causes:
            self._logged_causes.add(cause)
            then = (
                "the built-in classifier decides"
                if self.settings.mode == "hybrid"
                else "routing to frontier"
            )
            log.warning("classifier failed (%s): %s; %s", cause, detail, then)
        else:
            log.debug("classifier failed (%s): %s", cause, detail)

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
