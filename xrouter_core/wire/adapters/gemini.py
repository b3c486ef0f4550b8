"""Google Gemini (`models/{model}:generateContent` and `:streamGenerateContent?alt=sse`).

Gemini has no tool-call ids: the adapter makes them up (`call_…`) and maps tool replies
back to their function by the id in the assistant message. Gemini 3 signs its function
calls (`thoughtSignature`) and refuses a replayed call without its signature, so the
signature travels inside the id (in [a-zA-Z0-9_-], valid for every provider) and is put
back on the way out; a call without one gets Gemini's documented skip marker. Its usage
counts are cumulative, so only the last `usageMetadata` of a stream counts.
Knowingly not translated: `n`, `logprobs`, `seed`, penalties, `logit_bias`;
thought parts (`"thought": true`) are dropped from answers.
"""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from xrouter_core.config import Route
from xrouter_core.wire import canonical as ev
from xrouter_core.wire.adapters.base import (
    Adapter,
    JSONEventDecoder,
    SamplingNames,
    UpstreamRequest,
    as_int,
    content_parts,
    forward_headers,
    function_tools,
    join_url,
    merge_same_role,
    model_for,
    new_tool_id,
    number_names,
    openai_completion,
    parse_arguments,
    put_sampling,
    text_of,
    tool_call_dict,
    tool_choice,
    tool_names_by_id,
)
from xrouter_core.wire.inbound import ChatRequest
from xrouter_core.wire.jsontext import compact_json

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# OpenAI's sampling options → Gemini's generationConfig (no seed, no penalties).
SAMPLING = SamplingNames(
    numbers=number_names(("temperature", "top_p"), top_p="topP"),
    max_tokens="maxOutputTokens",
    stop="stopSequences",
)
# JSON-schema keywords Gemini's OpenAPI-subset schema rejects.
UNSUPPORTED_SCHEMA_KEYS = frozenset({"$schema", "additionalProperties", "$id", "strict"})


SIGNATURE_MARK = "__ts__"
SKIP_SIGNATURE = "skip_thought_signature_validator"


# Clients may rewrite tool-call ids (OpenClaw keeps only [A-Za-z0-9]), which loses the
# signature inside the id; so the router also remembers recent signatures by the id's
# letters and digits. Bounded, per process: a miss falls back to the skip marker.
_recent_signatures: OrderedDict[str, str] = OrderedDict()
RECENT_SIGNATURES_MAX = 10_000


def _alphanumeric(call_id: str) -> str:
    return "".join(ch for ch in call_id if ch.isascii() and ch.isalnum())


def call_id_with_signature(call: dict[str, Any], part: dict[str, Any]) -> str:
    """A tool-call id for a functionCall part that carries its thoughtSignature along."""
    base = str(call.get("id") or new_tool_id())
    signature = part.get("thoughtSignature")
    if not isinstance(signature, str) or not signature:
        return base
    safe = signature.replace("+", "-").replace("/", "_").rstrip("=")
    call_id = f"{base}{SIGNATURE_MARK}{safe}"
    _recent_signatures[_alphanumeric(call_id)] = signature
    while len(_recent_signatures) > RECENT_SIGNATURES_MAX:
        _recent_signatures.popitem(last=False)
    return call_id


def signature_from_id(call_id: str) -> str | None:
    if SIGNATURE_MARK not in call_id:
        return _recent_signatures.get(_alphanumeric(call_id)) if call_id else None
    safe = call_id.split(SIGNATURE_MARK, 1)[1]
    text = safe.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        base64.b64decode(text, validate=True)
    except (ValueError, RecursionError):  # deep nesting too
        return None
    return text


def finish_reason(reason: Any, had_tool_calls: bool) -> str:
    if had_tool_calls and reason in (None, "STOP"):
        return "tool_calls"
    return FINISH_REASONS.get(str(reason or "STOP"), "stop")


def clean_schema(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: clean_schema(v) for k, v in schema.items() if k not in UNSUPPORTED_SCHEMA_KEYS}
    if isinstance(schema, list):
        return [clean_schema(v) for v in schema]
    return schema


def to_parts(content: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for part in content_parts(content):
        if part.kind == "text":
            if part.text:
                parts.append({"text": part.text})
        elif part.data:
            parts.append({"inlineData": {"mimeType": part.media_type, "data": part.data}})
        else:
            parts.append({"fileData": {"mimeType": part.media_type, "fileUri": part.url}})
    return parts


def to_contents(messages: list[dict[str, Any]]) -> tuple[list[dict], list[dict[str, Any]]]:
    """OpenAI messages → (systemInstruction parts, user/model contents)."""
    names = tool_names_by_id(messages)
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = text_of(content)
            if text:
                system.append({"text": text})
        elif role == "assistant":
            parts = to_parts(content)
            for n, call in enumerate(message.get("tool_calls") or []):
                function = call.get("function") or {}
                part: dict[str, Any] = {
                    "functionCall": {
                        "name": str(function.get("name") or ""),
                        "args": parse_arguments(function.get("arguments")),
                    }
                }
                signature = signature_from_id(str(call.get("id") or ""))
                if signature or n == 0:  # Gemini checks the first call of a turn
                    part["thoughtSignature"] = signature or SKIP_SIGNATURE
                parts.append(part)
            if parts:
                contents.append({"role": "model", "parts": parts})
        elif role in ("tool", "function"):
            call_id = str(message.get("tool_call_id") or "")
            name = names.get(call_id) or str(message.get("name") or "tool")
            text = text_of(content)
            try:
                result = json.loads(text)
            except (ValueError, RecursionError):  # deep nesting too
                result = text
            if not isinstance(result, dict):
                result = {"result": result}
            contents.append(
                {
                    "role": "user",
                    "parts": [{"functionResponse": {"name": name, "response": result}}],
                }
            )
        else:
            parts = to_parts(content)
            if parts:
                contents.append({"role": "user", "parts": parts})
    return system, merge_same_role(contents, "role", "parts")


def build_body(request: ChatRequest) -> dict[str, Any]:
    body = request.body
    system, contents = to_contents(request.messages)
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    put_sampling(body, SAMPLING, config)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if config:
        out["generationConfig"] = config
    tools = function_tools(body)
    choice = tool_choice(body)
    if tools:
        out["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t.name,
                        "description": t.description,
                        "parameters": clean_schema(t.parameters),
                    }
                    for t in tools
                ]
            }
        ]
        calling: dict[str, Any] = {
            "auto": {"mode": "AUTO"},
            "none": {"mode": "NONE"},
            "required": {"mode": "ANY"},
            "function": {"mode": "ANY", "allowedFunctionNames": [choice.name]},
        }[choice.mode]
        out["toolConfig"] = {"functionCallingConfig": calling}
    return out


class GeminiAdapter(Adapter):
    name = "gemini"

    def build_request(
        self,
        route: Route,
        request: ChatRequest,
        client_headers: Iterable[tuple[str, str]],
        keep_client_auth: bool = False,
    ) -> UpstreamRequest:
        model = model_for(route, request).removeprefix("models/")
        version = "" if route.base_path.rsplit("/", 1)[-1].startswith("v1") else "/v1beta"
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        url = join_url(route.base_url, f"{version}/models/{quote(model, safe='-._')}:{method}")
        auth = {"x-goog-api-key": route.api_key} if route.api_key else {}
        return UpstreamRequest(
            url=url,
            headers=forward_headers(client_headers, route, auth),
            body=compact_json(build_body(request)).encode(),
        )

    def parse_response(self, body: bytes) -> dict[str, Any]:
        doc = json.loads(body)
        candidates = doc.get("candidates") or [{}]
        candidate = candidates[0]
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if isinstance(part.get("text"), str) and not part.get("thought"):
                text.append(part["text"])
            elif isinstance(part.get("functionCall"), dict):
                call = part["functionCall"]
                calls.append(
                    tool_call_dict(
                        call_id_with_signature(call, part),
                        str(call.get("name") or ""),
                        json.dumps(call.get("args") or {}, ensure_ascii=False),
                    )
                )
        reason = candidate.get("finishReason")
        if not doc.get("candidates") and (doc.get("promptFeedback") or {}).get("blockReason"):
            reason = "SAFETY"
        prompt, completion, cached = usage_counts(doc.get("usageMetadata") or {})
        return openai_completion(
            id=str(doc.get("responseId") or ""),
            model=str(doc.get("modelVersion") or ""),
            text="".join(text),
            tool_calls=calls,
            finish_reason=finish_reason(reason, bool(calls)),
            prompt_tokens=prompt,
            completion_tokens=completion,
            cache_read_tokens=cached,
        )

    def stream_decoder(self) -> GeminiStreamDecoder:
        return GeminiStreamDecoder()


def usage_counts(usage: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt, completion, cached); thinking tokens are billed as output, so they count
    too. `cachedContentTokenCount` (context caching, explicit or implicit) is part of
    `promptTokenCount`."""
    return (
        as_int(usage.get("promptTokenCount")),
        as_int(usage.get("candidatesTokenCount")) + as_int(usage.get("thoughtsTokenCount")),
        as_int(usage.get("cachedContentTokenCount")),
    )


class GeminiStreamDecoder(JSONEventDecoder):
    """Each SSE event is a whole GenerateContentResponse holding the next parts."""

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._reason: str | None = None
        self._usage: tuple[int, int, int] | None = None

    def handle(self, doc: dict[str, Any], out: list[ev.StreamEvent]) -> None:
        if isinstance(doc.get("error"), dict):
            out.append(ev.StreamError(str(doc["error"].get("message") or "upstream error")))
            return
        if not self._started:
            self._started = True
            out.append(
                ev.Start(
                    id=str(doc.get("responseId") or ""), model=str(doc.get("modelVersion") or "")
                )
            )
        for candidate in (doc.get("candidates") or [])[:1]:
            for part in (candidate.get("content") or {}).get("parts") or []:
                if isinstance(part.get("text"), str) and part["text"] and not part.get("thought"):
                    out.append(ev.TextDelta(part["text"]))
                elif isinstance(part.get("functionCall"), dict):
                    call = part["functionCall"]
                    index = self.next_tool_index()
                    out.append(
                        ev.ToolCallStart(
                            index,
                            call_id_with_signature(call, part),
                            str(call.get("name") or ""),
                        )
                    )
                    out.append(
                        ev.ToolCallDelta(
                            index, json.dumps(call.get("args") or {}, ensure_ascii=False)
                        )
                    )
            if candidate.get("finishReason"):
                self._reason = candidate["finishReason"]
        if not doc.get("candidates") and (doc.get("promptFeedback") or {}).get("blockReason"):
            self._reason = "SAFETY"
        if isinstance(doc.get("usageMetadata"), dict):
            self._usage = usage_counts(doc["usageMetadata"])

    def end(self, out: list[ev.StreamEvent]) -> None:
        if self._started:
            out.append(ev.Finish(finish_reason(self._reason, self.tool_calls > 0)))
        if self._usage is not None:
            out.append(ev.Usage(*self._usage))
