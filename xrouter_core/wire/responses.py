"""OpenAI's Responses API as a client format (`POST /v1/responses`), both directions.

In: a Responses body becomes the internal chat request (OpenAI chat shape), so every
adapter is reached by translation: `input` (a string, or message, function_call,
function_call_output and reasoning items), `instructions` (the first system message),
function `tools`, `tool_choice`, `max_output_tokens`, `temperature`, `top_p`,
`reasoning.effort`, `text.format` (json_schema / json_object → `response_format`),
`parallel_tool_calls`, `user`. `store`, `include`, `metadata` and `previous_response_id`
are read here and echoed back; other tool types are refused (400 naming the type).

`previous_response_id`: the router keeps its own answers in a bounded in-memory store
(`ResponseStore`, least recently used first out, per router process). A follow-up that
names one gets that conversation (its input and output, not its instructions, as the
API does) put before its own input. An id the store does not hold is a 400
(`previous_response_not_found`); so is an answer made with `store: false`.

`item_reference` input items (`{"type": "item_reference", "id": "msg_…"}`: what the
Vercel AI SDK sends for its earlier answers, as `store` defaults to true) name output
items of those stored answers: they are read as the items themselves. On a Responses
route, references to items the router made (answers it translated) are sent as the
items; the others go as they are, for the provider that made them. A reference the
store does not hold is a 400 (`item_not_found`) on any other route.

Out: canonical stream events become the Responses event lifecycle
(`ResponsesEventRenderer`), and a whole chat completion becomes a `response` object
(`response_object`). The same output items feed the store.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xrouter_core.wire import canonical as ev
from xrouter_core.wire.errors import RouterError
from xrouter_core.wire.inbound import (
    MAX_TOKENS_LIMIT,
    RESPONSES,
    ChatRequest,
    load_json_object,
)
from xrouter_core.wire.sse import encode_json

# Request fields echoed on the response object as sent (when sent).
ECHOED = (
    "instructions",
    "max_output_tokens",
    "previous_response_id",
    "temperature",
    "top_p",
    "user",
    "store",
)
# finish_reason → (status, incomplete_details.reason) for answers that did not complete.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(slots=True)
class ResponsesCall:
    """What a Responses request needs beyond the chat body: what to echo on the answer,
    the conversation to store under the answer's id, and whether to store it."""

    echo: dict[str, Any]
    # The conversation so far without the instructions (previous turns + this input).
    history: list[dict[str, Any]] = field(default_factory=list)
    store: bool = True
    # Functions of `namespace` tools, offered flat: chat name → (namespace, name).
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)
    # The client's own body, for a route that speaks Responses (native_body).
    raw: dict[str, Any] = field(default_factory=dict)
    # Set when the request holds what only a Responses route can serve (a hosted tool):
    # the 400 that any other route gets.
    native_only: RouterError | None = None
    # previous_response_id was resolved from the router's store (history holds it).
    expanded: bool = False
    # item_reference ids of items the router made → the item, for a Responses route.
    references: dict[str, dict[str, Any]] = field(default_factory=dict)

    def output_name(self, chat_name: str) -> tuple[str, str | None]:
        """A called chat function's (name, namespace) as the Responses client knows it."""
        found = self.namespaced.get(chat_name)
        return (found[1], found[0]) if found else (chat_name, None)


# ---- the store of the router's own answers ---------------------------------------------


@dataclass(slots=True)
class StoredItem:
    """One output item of a stored answer, and whether the router made it (translated
    from another format) rather than a Responses route."""

    item: dict[str, Any]
    minted: bool


class ResponseStore:
    """A bounded LRU of response id → the conversation it ended (chat messages), with
    the answer's output items by item id (for `item_reference` inputs)."""

    def __init__(self, max_entries: int = 1000, max_chars: int = 50_000_000):
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._items: OrderedDict[str, tuple[list[dict[str, Any]], int]] = OrderedDict()
        self._chars = 0
        self._outputs: dict[str, dict[str, StoredItem]] = {}  # response id → item id → item
        self._owner: dict[str, str] = {}  # item id → response id

    def item(self, item_id: str) -> StoredItem | None:
        """The output item with this id, from an answer still in the store."""
        owner = self._owner.get(item_id)
        if owner is None or owner not in self._items:
            return None
        self._items.move_to_end(owner)
        found = self._outputs[owner][item_id]
        return StoredItem(copy.deepcopy(found.item), found.minted)

    def get(self, response_id: str) -> list[dict[str, Any]] | None:
        found = self._items.get(response_id)
        if found is None:
            return None
        self._items.move_to_end(response_id)
        return copy.deepcopy(found[0])

    def put(
        self,
        response_id: str,
        messages: list[dict[str, Any]],
        output: list[dict[str, Any]] | None = None,
        minted: bool = True,
    ) -> None:
        items = {
            str(item["id"]): StoredItem(item, minted)
            for item in output or []
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        }
        size = len(json.dumps(messages, ensure_ascii=False)) + sum(
            len(json.dumps(i.item, ensure_ascii=False)) for i in items.values()
        )
        if size > self.max_chars:
            return
        old = self._items.pop(response_id, None)
        if old is not None:
            self._chars -= old[1]
            self._forget(response_id)
        self._items[response_id] = (messages, size)
        self._outputs[response_id] = items
        for item_id in items:
            self._owner[item_id] = response_id
        self._chars += size
        while len(self._items) > self.max_entries or self._chars > self.max_chars:
            dropped_id, (_, dropped) = self._items.popitem(last=False)
            self._chars -= dropped
            self._forget(dropped_id)

    def _forget(self, response_id: str) -> None:
        for item_id in self._outputs.pop(response_id, {}):
            if self._owner.get(item_id) == response_id:
                del self._owner[item_id]

    def __len__(self) -> int:
        return len(self._items)


def remember(
    store: ResponseStore, call: ResponsesCall, response: dict[str, Any], minted: bool = True
) -> None:
    """Keep a finished answer's conversation for a follow-up naming its id, and its
    output items for follow-ups naming them (`minted`: the router made the answer)."""
    if not call.store or response.get("status") not in ("completed", "incomplete"):
        return
    output = response.get("output") or []
    reply = output_as_messages(output)
    store.put(str(response["id"]), call.history + reply, output, minted)


# ---- in --------------------------------------------------------------------------------


def bad(message: str, code: str = "invalid_request") -> RouterError:
    return RouterError(400, message, code=code)


def parse_responses(
    raw: bytes | None,
    lookup: Callable[[str], list[dict[str, Any]] | None] = lambda _id: None,
    find_item: Callable[[str], StoredItem | None] = lambda _id: None,
) -> ChatRequest:
    """A Responses body → the internal chat request (client_format "responses").
    `lookup` finds a stored conversation by response id, `find_item` a stored output
    item by item id."""
    doc = load_json_object(raw)
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise bad("'model' must be a string.", "invalid_model")
    if "stream" in doc and not isinstance(doc["stream"], bool):
        raise bad("'stream' must be true or false.", "invalid_stream")
    if "input" not in doc and not doc.get("previous_response_id"):
        raise bad("'input' is required.", "missing_input")
    history: list[dict[str, Any]] = []
    previous = doc.get("previous_response_id")
    if previous is not None:
        if not isinstance(previous, str) or not previous:
            raise bad("'previous_response_id' must be a string.", "invalid_previous_response_id")
        stored = lookup(previous)
        if stored is None:
            raise bad(
                f"Previous response with id '{previous}' not found. The router keeps its own "
                "answers in memory (a bounded number, not across restarts, not those made "
                "with store: false); send the whole conversation in 'input' instead.",
                "previous_response_not_found",
            )
        history.extend(stored)
    namespaced: dict[str, tuple[str, str]] = {}
    native_only: list[RouterError] = []
    tools = chat_tools(doc.get("tools"), namespaced, refused=native_only)
    references: dict[str, dict[str, Any]] = {}
    history.extend(
        input_messages(resolve_references(doc.get("input", []), find_item, references, native_only))
    )
    if not history:
        raise native_only[0] if native_only else bad("'input' must not be empty.", "invalid_input")
    messages = list(history)
    instructions = doc.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    elif instructions is not None and not isinstance(instructions, str):
        raise bad("'instructions' must be a string.", "invalid_instructions")
    body: dict[str, Any] = {"messages": messages}
    if model:
        body["model"] = model
    limit = doc.get("max_output_tokens")
    if limit is not None:
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_TOKENS_LIMIT
        ):
            raise bad(
                f"'max_output_tokens' must be a whole number from 1 to {MAX_TOKENS_LIMIT}.",
                "invalid_max_tokens",
            )
        body["max_tokens"] = limit
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if doc.get(name) is not None:
            body[name] = doc[name]
    if tools:
        body["tools"] = tools
    try:
        choice = chat_tool_choice(doc.get("tool_choice"))
    except RouterError as exc:
        native_only.append(exc)
        choice = None
    if choice is not None and tools:
        body["tool_choice"] = choice
    reasoning = doc.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        body["reasoning_effort"] = reasoning["effort"]
    response_format = chat_response_format(doc.get("text"))
    if response_format is not None:
        body["response_format"] = response_format
    if doc.get("stream"):
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    echo = {name: doc[name] for name in ECHOED if name in doc}
    echo["model"] = model or ""
    echo["tools"] = doc.get("tools") if isinstance(doc.get("tools"), list) else []
    echo["tool_choice"] = doc.get("tool_choice", "auto")
    echo["parallel_tool_calls"] = doc.get("parallel_tool_calls", True) is not False
    echo["metadata"] = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    echo["text"] = (
        doc.get("text") if isinstance(doc.get("text"), dict) else {"format": {"type": "text"}}
    )
    if isinstance(reasoning, dict):
        echo["reasoning"] = {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
    call = ResponsesCall(
        echo,
        history,
        doc.get("store", True) is not False,
        namespaced,
        raw=doc,
        native_only=native_only[0] if native_only else None,
        expanded=previous is not None,
        references=references,
    )
    return ChatRequest(body=body, client_format=RESPONSES, responses=call)


def resolve_references(
    value: Any,
    find_item: Callable[[str], StoredItem | None],
    references: dict[str, dict[str, Any]],
    refused: list[RouterError],
) -> Any:
    """`input` with each item_reference the store holds replaced by that item. The items
    the router made are also kept in `references` (as input items) for a Responses route;
    a reference the store does not hold is left out, its 400 added to `refused` (a
    Responses route may hold it: such a route gets the input as sent)."""
    if not isinstance(value, list):
        return value
    out: list[Any] = []
    for index, item in enumerate(value):
        if not (isinstance(item, dict) and item.get("type") == "item_reference"):
            out.append(item)
            continue
        item_id = item.get("id")
        found = find_item(item_id) if isinstance(item_id, str) else None
        if found is None:
            refused.append(
                bad(
                    f"input[{index}] is an item_reference to {item_id!r}, an item the router "
                    "does not hold. It keeps the output items of its own answers in memory "
                    "(a bounded number, not across restarts, not those made with store: "
                    "false); send the item itself instead (Vercel AI SDK: providerOptions "
                    "{openai: {store: false}}).",
                    "item_not_found",
                )
            )
            continue
        # As an input item: what an output item carries but an input item does not, out.
        resolved = {k: v for k, v in found.item.items() if k not in ("id", "status")}
        if found.minted:
            references[item_id] = resolved
        out.append(resolved)
    return out


def input_messages(value: Any) -> list[dict[str, Any]]:
    """Responses `input` → chat messages (a tool call's items join one assistant turn)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise bad("'input' must be a string or an array of input items.", "invalid_input")
    out: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad(f"input[{index}] must be an object.", "invalid_input")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise bad(
                    f"input[{index}].role must be user, assistant, system or developer.",
                    "invalid_input",
                )
            content = message_content(item.get("content"), index)
            if role == "assistant":
                text = (
                    content
                    if isinstance(content, str)
                    else "".join(p.get("text", "") for p in content if p.get("type") == "text")
                )
                out.append({"role": "assistant", "content": text})
            else:
                out.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id") or item.get("id") or ""),
                "type": "function",
                "function": {
                    "name": flat_name(item.get("namespace"), str(item.get("name") or "")),
                    "arguments": item.get("arguments")
                    if isinstance(item.get("arguments"), str)
                    else "{}",
                },
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if not last.get("content"):
                    last["content"] = None
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else parts_text(output)
            out.append(
                {"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": text}
            )
        elif kind == "reasoning":
            continue  # the model's own reasoning: no chat provider takes it back
        else:
            raise bad(
                f"input[{index}] has type {kind!r}, which the router does not support "
                "(it takes message, function_call, function_call_output and reasoning items).",
                "unsupported_input_item",
            )
    return out


def parts_text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "\n".join(
        p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def message_content(content: Any, index: int) -> str | list[dict[str, Any]]:
    """A message's content: a string stays one, parts become chat parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"input[{index}].content must be a string or an array.", "invalid_input")
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "refusal"):
            text = part.get("text") if kind != "refusal" else part.get("refusal")
            if isinstance(text, str):
                parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise bad(
                    f"input[{index}]: an input_image needs an image_url (file_id is not supported).",
                    "unsupported_input_image",
                )
            image: dict[str, Any] = {"url": url}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise bad(
                f"input[{index}] has a content part of type {kind!r}, which the router does "
                "not support (input_text, input_image and output_text are).",
                "unsupported_content",
            )
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def flat_name(namespace: Any, name: str) -> str:
    """A namespaced function's name as a chat function name (`<namespace>__<name>`)."""
    return f"{namespace}__{name}" if isinstance(namespace, str) and namespace else name


def chat_tools(
    tools: Any,
    namespaced: dict[str, tuple[str, str]],
    where: str = "tools",
    refused: list[RouterError] | None = None,
) -> list[dict[str, Any]]:
    """Function tools as chat tools; a `namespace` tool's functions are offered flat
    (`<namespace>__<name>`, recorded in `namespaced` to name the calls back). Other
    (hosted) tools are left out, their 400 added to `refused` when given, else raised:
    only a route that speaks Responses can serve them."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad(f"'{where}' must be an array.", "invalid_tools")
    out = []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace" and where == "tools" and isinstance(tool.get("name"), str):
            inner = chat_tools(tool.get("tools") or [], {}, f"tools[{index}].tools")
            for function in inner:
                name = function["function"]["name"]
                flat = flat_name(tool["name"], name)
                namespaced[flat] = (tool["name"], name)
                function["function"]["name"] = flat
            out.extend(inner)
            continue
        if kind != "function":
            error = bad(
                f"{where}[{index}] has type {kind!r}: the router translates only function "
                "tools for chat routes (a hosted tool needs a route that speaks the "
                "Responses API, provider openai_responses).",
                "unsupported_tool",
            )
            if refused is None:
                raise error
            refused.append(error)
            continue
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise bad(f"{where}[{index}].name is required.", "invalid_tools")
        function: dict[str, Any] = {
            "name": tool["name"],
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": str(choice.get("name") or "")}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        return "required" if choice.get("mode") == "required" else "auto"
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise bad(
        f"tool_choice {kind!r} is not supported; use auto, none, required or a function.",
        "unsupported_tool_choice",
    )


def chat_response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise bad(f"text.format type {fmt['type']!r} is not supported.", "unsupported_text_format")


# ---- to a route that speaks Responses ------------------------------------------------


def native_body(call: ResponsesCall, model: str) -> dict[str, Any]:
    """The client's body for a Responses route: as sent, with the route's model; a
    previous_response_id the router resolved is sent as the conversation it stands for
    (the route may never have seen that answer)."""
    body = dict(call.raw)
    if model:
        body["model"] = model
    if call.expanded:
        body.pop("previous_response_id", None)
        body["input"] = responses_input(call.history, call)
    elif call.references and isinstance(body.get("input"), list):
        body["input"] = [
            call.references.get(item["id"], item)
            if isinstance(item, dict)
            and item.get("type") == "item_reference"
            and isinstance(item.get("id"), str)
            else item
            for item in body["input"]
        ]
    return body


def responses_input(messages: list[dict[str, Any]], call: ResponsesCall) -> list[dict[str, Any]]:
    """Chat messages back as Responses input items."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id") or "",
                    "output": content if isinstance(content, str) else parts_text(content),
                }
            )
            continue
        if role == "assistant":
            if content:
                text = content if isinstance(content, str) else parts_text(content)
                items.append({"type": "message", "role": "assistant", "content": [text_part(text)]})
            for tool_call in message.get("tool_calls") or []:
                function = tool_call.get("function") or {}
                item = call_item(
                    new_id("fc"),
                    str(tool_call.get("id") or ""),
                    str(function.get("name") or ""),
                    str(function.get("arguments") or ""),
                    call=call,
                )
                items.append({k: v for k, v in item.items() if k not in ("id", "status")})
            continue
        parts: list[dict[str, Any]] = []
        for part in (
            [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        ):
            if part.get("type") == "text":
                parts.append({"type": "input_text", "text": part.get("text") or ""})
            elif part.get("type") == "image_url":
                parts.append({"type": "input_image", "image_url": part["image_url"]["url"]})
        items.append({"type": "message", "role": role, "content": parts})
    return items


def usage_of_response(doc: Any) -> ev.Usage | None:
    """The counts of a Responses `usage` object (a native answer's)."""
    return ev.usage_from_responses(doc.get("usage") if isinstance(doc, dict) else None)


# ---- out -------------------------------------------------------------------------------


def responses_usage(usage: ev.Usage | None, raw: Any = None) -> dict[str, Any] | None:
    """Responses' usage object; `raw` (an OpenAI usage dict) adds cached/reasoning counts."""
    if usage is None:
        return None
    cached = usage.cache_read_tokens
    reasoning = 0
    if isinstance(raw, dict):
        cached = int((raw.get("prompt_tokens_details") or {}).get("cached_tokens") or cached)
        reasoning = int((raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def response_shell(
    response_id: str,
    created_at: int,
    model: str,
    echo: dict[str, Any],
    status: str = "in_progress",
) -> dict[str, Any]:
    """A response object with no output yet (the one `response.created` carries)."""
    doc: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }
    doc.update({k: v for k, v in echo.items() if k != "model"})
    return doc


def finish_status(doc: dict[str, Any], reason: str | None) -> None:
    incomplete = INCOMPLETE.get(reason or "")
    if incomplete:
        doc["status"] = "incomplete"
        doc["incomplete_details"] = {"reason": incomplete}
    else:
        doc["status"] = "completed"
        doc["completed_at"] = int(time.time())


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [text_part(text)] if status == "completed" else [],
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(
    item_id: str,
    call_id: str,
    name: str,
    arguments: str,
    status: str = "completed",
    call: ResponsesCall | None = None,
) -> dict[str, Any]:
    item = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }
    if call is not None:
        item["name"], namespace = call.output_name(name)
        if namespace:
            item["namespace"] = namespace
    return item


def response_object(
    completion: dict[str, Any], call: ResponsesCall, model: str = ""
) -> dict[str, Any]:
    """A whole OpenAI chat.completion as a Responses `response` object."""
    choices = completion.get("choices") or [{}]
    message = choices[0].get("message") or {}
    output: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(message_item(new_id("msg"), text))
    for call_ in message.get("tool_calls") or []:
        function = call_.get("function") or {}
        output.append(
            call_item(
                new_id("fc"),
                str(call_.get("id") or new_id("call")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
                call=call,
            )
        )
    doc = response_shell(
        new_id("resp"),
        int(completion.get("created") or time.time()),
        str(completion.get("model") or model or call.echo.get("model") or ""),
        call.echo,
    )
    doc["output"] = output
    finish_status(doc, choices[0].get("finish_reason"))
    raw_usage = completion.get("usage")
    doc["usage"] = responses_usage(ev.usage_from_openai(raw_usage), raw_usage)
    return doc


def output_as_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the chat messages of that assistant turn."""
    text = "".join(
        part.get("text", "")
        for item in output
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    )
    calls = [
        {
            "id": item["call_id"],
            "type": "function",
            "function": {
                "name": flat_name(item.get("namespace"), item["name"]),
                "arguments": item["arguments"],
            },
        }
        for item in output
        if item.get("type") == "function_call"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return [message]


class ResponsesEventRenderer:
    """Canonical events → the Responses event stream: response.created, .in_progress,
    per output item output_item.added / content_part.added / output_text.delta … .done
    (or function_call_arguments.delta … .done) / output_item.done, then
    response.completed (or .incomplete) with the whole output and usage; an upstream
    error becomes `error` and response.failed. Every event has its sequence_number."""

    def __init__(self, model: str = "", call: ResponsesCall | None = None):
        self.call = call or ResponsesCall({})
        self.model = model
        self.usage: ev.Usage | None = None
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.output: list[dict[str, Any]] = []
        # The final response object, once response.completed/.incomplete/.failed was sent.
        self.final: dict[str, Any] | None = None
        self._seq = 0
        self._started = False
        self._reason: str | None = None
        self._text_item: int | None = None  # output index of the open message
        self._calls: dict[int, int] = {}  # canonical tool-call index → output index
        self._open_calls: list[int] = []

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        out = encode_json({"type": kind, "sequence_number": self._seq, **data}, kind)
        self._seq += 1
        return out

    def _shell(self, status: str) -> dict[str, Any]:
        return response_shell(self.id, self.created_at, self.model, self.call.echo, status)

    def _start(self, out: list[bytes], event: ev.Start | None = None) -> None:
        if self._started:
            return
        self._started = True
        if event is not None and event.model and not self.model:
            self.model = event.model
        out.append(self._event("response.created", {"response": self._shell("in_progress")}))
        out.append(self._event("response.in_progress", {"response": self._shell("in_progress")}))

    def _close_text(self, out: list[bytes]) -> None:
        if self._text_item is None:
            return
        index, self._text_item = self._text_item, None
        item = self.output[index]
        text = item.pop("_text")
        item["status"] = "completed"
        item["content"] = [text_part(text)]
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        out.append(
            self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
        )
        out.append(self._event("response.content_part.done", {**where, "part": text_part(text)}))
        out.append(self._event("response.output_item.done", {"output_index": index, "item": item}))

    def _close_calls(self, out: list[bytes]) -> None:
        for index in self._open_calls:
            item = self.output[index]
            item["status"] = "completed"
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    {
                        "item_id": item["id"],
                        "output_index": index,
                        "name": item["name"],
                        "arguments": item["arguments"],
                    },
                )
            )
            out.append(
                self._event("response.output_item.done", {"output_index": index, "item": item})
            )
        self._open_calls = []

    def _add_item(self, out: list[bytes], item: dict[str, Any]) -> int:
        index = len(self.output)
        self.output.append(item)
        shown = {k: v for k, v in item.items() if not k.startswith("_")}
        out.append(
            self._event("response.output_item.added", {"output_index": index, "item": shown})
        )
        return index

    def _open_call(self, out: list[bytes], canonical: int, call_id: str, name: str) -> int:
        self._close_text(out)
        index = self._add_item(
            out,
            call_item(new_id("fc"), call_id or new_id("call"), name, "", "in_progress", self.call),
        )
        self._calls[canonical] = index
        self._open_calls.append(index)
        return index

    def render(self, events: list[ev.StreamEvent]) -> bytes:
        out: list[bytes] = []
        for event in events:
            if self.final is not None:
                break  # failed: nothing after response.failed
            if isinstance(event, ev.Start):
                self._start(out, event)
            elif isinstance(event, ev.TextDelta):
                self._start(out)
                if not event.text:
                    continue
                if self._text_item is None:
                    item = message_item(new_id("msg"), "", "in_progress")
                    item["_text"] = ""
                    self._text_item = self._add_item(out, item)
                    out.append(
                        self._event(
                            "response.content_part.added",
                            {
                                "item_id": item["id"],
                                "output_index": self._text_item,
                                "content_index": 0,
                                "part": text_part(""),
                            },
                        )
                    )
                item = self.output[self._text_item]
                item["_text"] += event.text
                out.append(
                    self._event(
                        "response.output_text.delta",
                        {
                            "item_id": item["id"],
                            "output_index": self._text_item,
                            "content_index": 0,
                            "delta": event.text,
                            "logprobs": [],
                        },
                    )
                )
            elif isinstance(event, ev.ToolCallStart):
                self._start(out)
                self._open_call(out, event.index, event.id, event.name)
            elif isinstance(event, ev.ToolCallDelta):
                self._start(out)
                index = self._calls.get(event.index)
                if index is None:
                    index = self._open_call(out, event.index, "", "")
                item = self.output[index]
                item["arguments"] += event.arguments
                out.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        {"item_id": item["id"], "output_index": index, "delta": event.arguments},
                    )
                )
            elif isinstance(event, ev.Finish):
                self._reason = event.reason
            elif isinstance(event, ev.Usage):
                self.usage = event
            elif isinstance(event, ev.StreamError):
                self._start(out)
                self._fail(out, event.message)
        return b"".join(out)

    def _fail(self, out: list[bytes], message: str) -> None:
        out.append(
            self._event("error", {"code": "server_error", "message": message, "param": None})
        )
        doc = self._shell("failed")
        doc["output"] = self._finished_output()
        doc["error"] = {"code": "server_error", "message": message}
        doc["usage"] = responses_usage(self.usage)
        self.final = doc
        out.append(self._event("response.failed", {"response": doc}))

    def _finished_output(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in item.items() if not k.startswith("_")} for item in self.output]

    def close(self) -> bytes:
        if self.final is not None:
            return b""
        out: list[bytes] = []
        self._start(out)
        self._close_text(out)
        self._close_calls(out)
        doc = self._shell("completed")
        doc["output"] = self._finished_output()
        finish_status(doc, self._reason)
        doc["usage"] = responses_usage(self.usage)
        self.final = doc
        kind = "response.completed" if doc["status"] == "completed" else "response.incomplete"
        out.append(self._event(kind, {"response": doc}))
        return b"".join(out)
