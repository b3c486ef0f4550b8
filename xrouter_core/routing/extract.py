"""What the person asked: the classifier's input, without what agent clients wrap around it.

Agent clients send far more than the person's words. OpenClaw stamps each user message
with `[Sat 2026-11-21 22:13 UTC] `, appends a `Runtime: agent=… | session=…` line and
sends its own `<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>` block as the *last* user message;
Claude Code adds `<system-reminder>` blocks, Cline and Roo Code `<environment_details>`,
Codex CLI `<environment_context>` and `<user_instructions>`. Classifying the last user
message as sent would classify that boilerplate, and a decision cache keyed on it would
never hit (timestamps and session ids change on every run). So the classifier sees the
latest message the person wrote, cleaned, plus a short slice of the exchange before it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from xrouter_core.wire.inbound import content_text

if TYPE_CHECKING:
    from xrouter_core.wire.inbound import ChatRequest

MAX_INPUT_CHARS = 2000
CONTEXT_CHARS = 300
EARLIER_ASK_CHARS = 150

# Content parts the person attaches (OpenAI and Anthropic names); tool results are not media.
MEDIA_PARTS = frozenset(
    {"image_url", "input_image", "image", "input_audio", "audio", "file", "input_file", "document"}
)
# Roles whose content never is the person's request.
NOT_THE_PERSON = frozenset({"system", "developer", "tool", "function", "assistant"})
SYSTEM_ROLES = frozenset({"system", "developer"})

# OpenClaw's delimited runtime-context blocks (they may nest; an unclosed one runs to the end).
_OPENCLAW_BEGIN = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"
_OPENCLAW_END = "<<<END_OPENCLAW_INTERNAL_CONTEXT>>>"
_BEGIN, _END = re.escape(_OPENCLAW_BEGIN), re.escape(_OPENCLAW_END)
# An innermost block: no other BEGIN between its BEGIN and END.
_OPENCLAW_BLOCK = re.compile(f"{_BEGIN}(?:(?!{_BEGIN}).)*?{_END}", re.DOTALL)
# OpenClaw's per-message arrival stamp, `[DOW YYYY-MM-DD HH:MM TZ] ` (channel envelopes put
# more inside the brackets, always with the same date-time).
_LEADING_TIMESTAMP = re.compile(
    r"\A\s*\[[^\]\n]{0,80}?\d{4}-\d{2}-\d{2} \d{2}:\d{2}[^\]\n]{0,80}\] ?"
)
# OpenClaw's trailing `Runtime: agent=main | session=… | model=…` line.
_RUNTIME_TRAILER = re.compile(r"(?:\A|\n)[ \t]*Runtime: [a-z_]+=[^\n]*\s*\Z")
# Blocks other agent clients inject into user messages: dropped with their content.
_INJECTED_TAGS = (
    "system-reminder",  # Claude Code
    "environment_details",  # Cline, Roo Code
    "environment_context",  # Codex CLI
    "user_instructions",  # Codex CLI (AGENTS.md)
    "local-command-stdout",  # Claude Code: output of a local slash command
    "local-command-stderr",
)
_INJECTED_BLOCK = re.compile(
    r"<(" + "|".join(map(re.escape, _INJECTED_TAGS)) + r")(?:\s[^>]*)?>.*?</\1>", re.DOTALL
)
# Wrappers around the person's own words: the tags go, the words stay (Cline's <task>).
_UNWRAPPED_TAGS = re.compile(r"</?(?:task|feedback|user_query)>")
# Cline/Roo send tool results as user text: `[read_file for 'a.py'] Result:`.
_TEXT_TOOL_RESULT = re.compile(r"\A\[[A-Za-z0-9_.:-]+(?: for [^\]\n]*)?\] Result:")
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")


def strip_client_wrappers(text: str) -> str:
    """The person's words with every known client wrapper removed, whitespace tidied."""
    if _OPENCLAW_BEGIN in text:
        previous = None
        while previous != text:
            previous, text = text, _OPENCLAW_BLOCK.sub("", text)
        if _OPENCLAW_BEGIN in text:
            text = text[: text.index(_OPENCLAW_BEGIN)]
    if "<" in text:
        text = _INJECTED_BLOCK.sub("", text)
        text = _UNWRAPPED_TAGS.sub("", text)
    text = _LEADING_TIMESTAMP.sub("", text, count=1)
    text = _RUNTIME_TRAILER.sub("", text)
    text = _BLANK_RUNS.sub("\n\n", text.strip())
    if _TEXT_TOOL_RESULT.match(text):
        return ""
    return text


def person_text(message: dict[str, Any]) -> str:
    """What the person wrote in this message; "" for other roles and pure client context."""
    if message.get("role") in NOT_THE_PERSON:
        return ""
    return strip_client_wrappers(content_text(message.get("content")))


def has_media(message: dict[str, Any]) -> bool:
    """An image, audio or file part: the person sent something, even without words."""
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") in MEDIA_PARTS for part in content
    )


def latest_person_message(messages: list[dict[str, Any]]) -> tuple[int, str] | None:
    """Index and cleaned text of the latest message the person wrote, if any.

    A user message with media but no words counts (its text is ""), so a picture is
    never classified by the words of an older message.
    """
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        text = person_text(message)
        if text or (message.get("role") == "user" and has_media(message)):
            return index, text
    return None


def system_text(messages: list[dict[str, Any]]) -> str:
    """The system (and developer) messages' text, joined."""
    return "\n".join(
        content_text(m.get("content")) for m in messages if m.get("role") in SYSTEM_ROLES
    )


_UNREAD: Any = object()


class Reading:
    """What routing reads off one request's messages, each at most once per request: the
    latest message the person wrote (the classifier's input and the tool-loop task both
    need it) and the system text (the tool-loop task and the session's identity)."""

    __slots__ = ("messages", "_latest", "_system")

    def __init__(self, messages: list[dict[str, Any]]):
        self.messages = messages
        self._latest: tuple[int, str] | None = _UNREAD
        self._system: str | None = None

    @property
    def latest(self) -> tuple[int, str] | None:
        """`latest_person_message` of the messages."""
        if self._latest is _UNREAD:
            self._latest = latest_person_message(self.messages)
        return self._latest

    @property
    def system(self) -> str:
        """`system_text` of the messages."""
        if self._system is None:
            self._system = system_text(self.messages)
        return self._system


def reading_of(chat: ChatRequest) -> Reading:
    """The request's Reading, made at its first use; made anew if its messages were
    replaced (a plugin's edit) since."""
    reading = chat.reading
    if reading is None or reading.messages is not chat.messages:
        reading = chat.reading = Reading(chat.messages)
    return reading


def truncate_middle(text: str, limit: int) -> str:
    """Keep the head and the tail: the ask is usually at one end of a long message."""
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return text[:half] + "\n...\n" + text[-half:]


def _previous_exchange(messages: list[dict[str, Any]], before: int) -> tuple[str, str]:
    """The person's previous ask and the assistant's last words to it (either may be "")."""
    answer = ""
    for index in range(before - 1, -1, -1):
        message = messages[index]
        role = message.get("role")
        if role == "assistant" and not answer:
            answer = content_text(message.get("content")).strip()
        elif role not in NOT_THE_PERSON:
            earlier = person_text(message)
            if earlier:
                return earlier, answer
    return "", answer


def all_user_input(messages: list[dict[str, Any]]) -> str:
    """Every message the person wrote, oldest first (CLASSIFIER_STRATEGY=all_user, the
    Node Xrouter's other strategy); each cut like the latest one."""
    texts = [person_text(m) for m in messages if m.get("role") == "user"]
    return "\n\n".join(truncate_middle(t, MAX_INPUT_CHARS) for t in texts if t)


def classifier_input(messages: list[dict[str, Any]], reading: Reading | None = None) -> str:
    """The latest request the person wrote, cleaned, with a little of the exchange before.

    Tool results, system prompts and client context never reach the classifier; the
    result is stable across retries, so the decision cache keys on it. `reading`: the
    request's, when the caller has one (see `reading_of`).
    """
    latest = (reading or Reading(messages)).latest
    if latest is None or not latest[1]:
        return ""
    index, text = latest
    ask = truncate_middle(text, MAX_INPUT_CHARS)
    earlier, answer = _previous_exchange(messages, index)
    context = []
    if earlier:
        context.append(f"(earlier request: {truncate_middle(earlier, EARLIER_ASK_CHARS)})")
    if answer:
        context.append(f"(previous answer: {answer[-CONTEXT_CHARS:]})")
    return "\n".join(context) + "\n\n" + ask if context else ask
