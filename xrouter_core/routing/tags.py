"""Request and response tags: short words that say what a request is about and what the
answer was, for rules (routing/rules.py), the log line, /usage, the live feed and headers.

Request tags come from two places:
- keywords: each tag has a word list (TAG_WORDS adds to or replaces the defaults below),
  matched as whole words, case-insensitively, on the person's text as the classifier
  reads it (routing/extract.py: client wrappers, system prompts and tool results left
  out): one pass splits the text (at most ~2 KB) into words, looked up in a set.
- capabilities: `vision` when a message carries an image, `tools` when the request
  offers tools.

Response tags: `refusal` when the answer declines (OpenAI's `refusal` field, a
`content_filter` finish, or an opening such as "I'm sorry, but I can't"). A stream is
tagged when it ends, from the first bytes the client received (StreamTranslator.head).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from xrouter_core.routing.models import has_images, has_tools
from xrouter_core.wire.sse import SSEParser

VISION = "vision"
TOOLS = "tools"
REFUSAL = "refusal"

# Tag → words (or short phrases). Lower case; matched on word boundaries.
DEFAULT_TAG_WORDS: dict[str, tuple[str, ...]] = {
    "code": (
        "code", "function", "bug", "debug", "compile", "compiler", "python", "javascript",
        "typescript", "java", "rust", "golang", "c++", "sql", "regex", "api", "class",
        "method", "stack trace", "traceback", "exception", "refactor", "unit test",
        "script", "html", "css", "json", "yaml", "bash", "shell", "git",
    ),
    "math": (
        "math", "equation", "integral", "derivative", "prove", "proof", "theorem",
        "algebra", "calculus", "probability", "matrix", "solve for", "polynomial",
        "geometry", "statistics",
    ),
    "translation": (
        "translate", "translation", "in french", "in german", "in spanish", "in english",
        "in italian", "in japanese", "in chinese", "into french", "into german",
        "into spanish", "into english",
    ),
    "summary": ("summarize", "summarise", "summary", "tl;dr", "tldr", "key points"),
    "creative": ("poem", "story", "lyrics", "haiku", "novel", "fiction", "limerick"),
    VISION: ("image", "picture", "photo", "screenshot", "diagram"),
}  # fmt: skip

# How an answer that declines usually opens (checked on its first ~200 characters).
_REFUSAL_OPENINGS = re.compile(
    r"\A\W*(?:i'?m sorry,? but|sorry,? but|i am sorry,? but|i apologi[sz]e,? but|"
    r"i can(?:'|no)?t (?:help|assist|comply|provide|do that)|"
    r"i cannot (?:help|assist|comply|provide|do that)|i won'?t (?:help|be able)|"
    r"i'?m (?:not able|unable) to (?:help|assist|comply|provide)|"
    r"i am (?:not able|unable) to (?:help|assist|comply|provide)|as an ai)",
    re.IGNORECASE,
)
REFUSAL_CHARS = 200


# The tagger's words: the text with punctuation made spaces (but + # _, for c++ and c#),
# split on whitespace. str.translate and str.split run in C: a regex over the text is
# several times slower. A configured word that splits in several (`stack trace`,
# `tl;dr`) is a phrase.
_PUNCTUATION = str.maketrans(
    dict.fromkeys(
        [c for c in string.punctuation if c not in "+#_"] + list("“”‘’«»—–…。，、！？：；（）"), " "
    )
)


def words_of(text: str) -> list[str]:
    return text.lower().translate(_PUNCTUATION).split()


class KeywordTagger:
    """Tags from word lists, read once: the text is split into words (words_of), single
    words are looked up in a set, phrases only where their first word occurs, each as
    one substring search of the words joined by spaces (in C: a phrase's words follow
    one another exactly where " its words " occurs in " the words "). No pattern is
    tried at every position, so the cost of a 2,000-character prompt does not grow with
    the number of words configured."""

    def __init__(self, words: Mapping[str, Sequence[str]]):
        self.words = {tag: tuple(w.lower() for w in found) for tag, found in words.items()}
        self._single: dict[str, set[str]] = {}
        # First word → (" the phrase's words ", tag) of each phrase starting with it.
        self._phrases: dict[str, list[tuple[str, str]]] = {}
        for tag, found in self.words.items():
            for word in found:
                tokens = words_of(word)
                if len(tokens) == 1:
                    self._single.setdefault(tokens[0], set()).add(tag)
                elif tokens:
                    padded = f" {' '.join(tokens)} "
                    self._phrases.setdefault(tokens[0], []).append((padded, tag))
        self._firsts = frozenset(self._single) | frozenset(self._phrases)

    def tags(self, text: str) -> list[str]:
        """The tags whose words occur in `text`, in the order of the configuration."""
        if not text or not self._firsts:
            return []
        tokens = words_of(text)
        present = self._firsts.intersection(tokens)
        if not present:
            return []
        found: set[str] = set()
        joined = ""
        for token in present:
            tags = self._single.get(token)
            if tags is not None:
                found.update(tags)
            phrases = self._phrases.get(token)
            if phrases is not None:
                joined = joined or f" {' '.join(tokens)} "
                for padded, tag in phrases:
                    if tag not in found and padded in joined:
                        found.add(tag)
        return [tag for tag in self.words if tag in found]


def merged_words(
    configured: Mapping[str, Sequence[str]] | None,
) -> dict[str, tuple[str, ...]]:
    """The defaults with TAG_WORDS applied: a tag given there replaces the default list
    of that name (an empty list turns the tag off); new tags are added."""
    words = dict(DEFAULT_TAG_WORDS)
    for tag, found in (configured or {}).items():
        if found:
            words[tag] = tuple(found)
        else:
            words.pop(tag, None)
    return words


def request_tags(tagger: KeywordTagger, text: str, body: Mapping[str, Any], messages) -> tuple:
    """The request's tags: its keywords' tags, then `vision` and `tools` from what it
    carries (each once)."""
    tags = tagger.tags(text)
    if VISION not in tags and has_images(messages):
        tags.append(VISION)
    if TOOLS not in tags and has_tools(body):
        tags.append(TOOLS)
    return tuple(tags)


def is_refusal(text: str) -> bool:
    return bool(text) and _REFUSAL_OPENINGS.match(text[:REFUSAL_CHARS]) is not None


def completion_tags(completion: Any) -> tuple[str, ...]:
    """A whole answer's tags (an OpenAI chat completion, as the addon holds every answer)."""
    if not isinstance(completion, dict):
        return ()
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        return ()
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    if message.get("refusal") or choice.get("finish_reason") == "content_filter":
        return (REFUSAL,)
    content = message.get("content")
    text = content if isinstance(content, str) else _parts_text(content)
    return (REFUSAL,) if is_refusal(text) else ()


def _parts_text(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(
        str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text"
    )


def stream_tags(head: bytes) -> tuple[str, ...]:
    """A finished stream's tags, from the first bytes the client received (any of the
    three client formats: OpenAI chunks, Anthropic events, Responses events)."""
    if not head:
        return ()
    parser = SSEParser()
    events = parser.feed(head)
    text: list[str] = []
    for event in events:
        try:
            doc = json.loads(event.data)
        except (ValueError, RecursionError):
            continue
        if not isinstance(doc, dict):
            continue
        for piece in _delta_texts(doc):
            if piece is True:
                return (REFUSAL,)
            text.append(piece)
        if sum(map(len, text)) >= REFUSAL_CHARS:
            break
    return (REFUSAL,) if is_refusal("".join(text)) else ()


def _delta_texts(doc: dict[str, Any]) -> Iterable[str | bool]:
    """The text pieces of one event (True: an explicit refusal)."""
    choices = doc.get("choices")
    if isinstance(choices, list):  # OpenAI chunks
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            if delta.get("refusal") or choice.get("finish_reason") == "content_filter":
                yield True
            if isinstance(delta.get("content"), str):
                yield delta["content"]
        return
    delta = doc.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("text"), str):  # Anthropic
        yield delta["text"]
    elif doc.get("type") == "response.output_text.delta" and isinstance(delta, str):
        yield delta  # Responses
    elif doc.get("type") == "response.refusal.delta":
        yield True


def header_value(tags: Sequence[str]) -> str:
    return ",".join(tags)
