"""The built-in `response-healing` plugin: JSON answers that arrive truncated or
malformed are repaired, when (and only when) the request asked for JSON.

Asking for JSON: OpenAI's `response_format` of type `json_object` or `json_schema` (a
Responses client's `text.format` is parsed into it), or an Anthropic client's structured
output (`output_config.format`, or the beta's `output_format`, of type `json_schema`).
Any other answer is left as it came.

The repair is json-repair's (a maintained library, not a repairer of our own):
- a whole answer that is not valid JSON gets json-repair's reading of it, if that is an
  object or an array (a model's prose stays as it is);
- a streamed answer's bytes are sent already, so only its end can be mended: when the
  text does not parse at its end, the closing part (the open string's quote, the open
  arrays' and objects' brackets, a `null` for a value cut off after its key) is sent as
  one last delta before the finish, in the client's format. json-repair judges what
  the text means (an object or array to close); the appended part is then checked to
  make the whole text valid JSON, and is not sent otherwise.
One log line says so each time an answer is repaired (or could not be).
"""

from __future__ import annotations

import json
import logging

import json_repair

from xrouter_core.plugins.api import PluginAnswer, PluginRequest
from xrouter_core.wire.inbound import ANTHROPIC

log = logging.getLogger("xrouter.plugins")

JSON_FORMATS = ("json_object", "json_schema")
# What may come between the cut and the closing brackets, tried in this order.
FILLERS = ("", "null", ":null")


def asks_for_json(request: PluginRequest) -> bool:
    fmt = request.body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in JSON_FORMATS:
        return True
    original = request.chat.original if request.client_format == ANTHROPIC else None
    if not isinstance(original, dict):
        return False
    config = original.get("output_config")
    output = config.get("format") if isinstance(config, dict) else original.get("output_format")
    return isinstance(output, dict) and output.get("type") == "json_schema"


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def repaired(text: str) -> str | None:
    """json-repair's reading of a whole answer, compact, when it is an object or array."""
    value = json_repair.repair_json(text, return_objects=True)
    if not isinstance(value, dict | list) or (not value and not {"{", "["} & set(text)):
        return None
    return json.dumps(value, ensure_ascii=False)


def closing_part(text: str) -> str | None:
    """What appended to `text` makes it valid JSON, for a streamed answer cut short; None
    when appending cannot (the text is not cut JSON, or it holds more than one value)."""
    value = json_repair.repair_json(text, return_objects=True, stream_stable=True)
    if not isinstance(value, dict | list):
        return None
    closers: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            closers.append("}" if char == "{" else "]")
        elif char in "}]" and closers:
            closers.pop()
    quote = ("\\" if escaped else "") + '"' if in_string else ""
    tail = "".join(reversed(closers))
    for filler in FILLERS:
        candidate = quote + filler + tail
        if candidate and is_json(text + candidate):
            return candidate
    return None


class ResponseHealing:
    """Repairs the JSON answers of requests that asked for JSON (see the module)."""

    name = "response-healing"

    def pre_request(self, request: PluginRequest) -> None:
        if asks_for_json(request):
            request.state[self.name] = True
            request.follow_stream = True  # a stream's end must pass here to be mended

    def post_response(self, answer: PluginAnswer) -> None:
        if not answer.request.state.get(self.name) or answer.status >= 400:
            return
        text = answer.text
        if not text or is_json(text):
            return
        if answer.streamed:
            self.heal_stream(answer, text)
        else:
            self.heal_whole(answer, text)

    def heal_whole(self, answer: PluginAnswer, text: str) -> None:
        fixed = repaired(text)
        if fixed is None:
            log.info("response-healing: route %s answered no JSON to repair", answer.tier)
            return
        answer.replace_text(fixed)
        log.info(
            "response-healing: repaired the JSON answer of route %s (%d chars, %d after)",
            answer.tier,
            len(text),
            len(fixed),
        )

    def heal_stream(self, answer: PluginAnswer, text: str) -> None:
        if not answer.open:
            return  # passed through, not followed: nothing can be added any more
        end = closing_part(text)
        if end is None:
            log.info(
                "response-healing: the streamed answer of route %s is not valid JSON and "
                "cannot be completed by appending to it (%d chars)",
                answer.tier,
                len(text),
            )
            return
        answer.append(end)
        log.info(
            "response-healing: completed the streamed JSON answer of route %s with %s",
            answer.tier,
            json.dumps(end),
        )
