"""What a plugin's hooks are given: the parsed request, the canonical answer, and `Reject`
to refuse a request with an error of the client's own shape.

Both objects wrap what the router already holds (the ChatRequest parsed once, the
OpenAI-shaped `chat.completion` every provider's answer becomes): nothing is copied or
parsed again for a plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xrouter_core.tiers import TIER_INDEX, TIERS
from xrouter_core.wire.canonical import Usage
from xrouter_core.wire.inbound import ChatRequest


class Reject(Exception):
    """Raised by `pre_request` to answer the client with this error instead of routing
    (the only exception of a hook that reaches the client): an OpenAI-shaped error, or
    an Anthropic-shaped one for an Anthropic client."""

    def __init__(self, status: int, message: str, code: str = "rejected_by_plugin") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def tier_name(value: Any) -> str | None:
    """A tier given by name (`cheap`, `medium`, `frontier`) or index (0, 1, 2, or "0" …);
    None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return TIERS[value] if 0 <= value < len(TIERS) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TIER_INDEX:
            return text
        if text.isdigit() and int(text) < len(TIERS):
            return TIERS[int(text)]
    return None


class PluginRequest:
    """One request as `pre_request` (and, through `answer.request`, `post_response`) see it.

    - `body`: the request in OpenAI chat-completion shape (every client format is parsed
      into it); read it freely. To change it, edit what `edit()` returns: that marks the
      request changed, so a route that would get the client's own body (an Anthropic
      client on an Anthropic route) gets the edited one, translated, instead.
    - `client_format`: "openai", "anthropic" or "responses".
    - `headers`: the client's headers, names in lower case (read only).
    - `tier`: set it to force the tier (a name or 0, 1, 2); the classifier is then not
      asked. The client key's tier ceiling and TOOLS_MIN_TIER still apply.
    - `forced_by`: which plugin set `tier` (filled in by the router).
    - `follow_stream`: set it to have `post_response` see a streamed answer assembled and
      be able to `append` to it before its end; the stream is then decoded and rendered
      again (the client's format still), not passed through byte for byte.
    - `state`: a dict a plugin may keep anything in from `pre_request` to `post_response`.
    """

    __slots__ = ("chat", "headers", "tier", "forced_by", "follow_stream", "state", "changed")

    def __init__(self, chat: ChatRequest, headers: Mapping[str, str]) -> None:
        self.chat = chat
        self.headers = headers
        self.tier: str | int | None = None
        self.forced_by = ""
        self.follow_stream = False
        self.state: dict[str, Any] = {}
        self.changed = False

    @property
    def body(self) -> dict[str, Any]:
        return self.chat.body

    @property
    def client_format(self) -> str:
        return self.chat.client_format

    @property
    def stream(self) -> bool:
        return self.chat.stream

    def edit(self) -> dict[str, Any]:
        """The body, to be changed in place: the route gets the changed request."""
        self.changed = True
        return self.chat.body


class PluginAnswer:
    """One routed answer as `post_response` sees it, once per request.

    - `request`: the PluginRequest `pre_request` saw.
    - `status`: the HTTP status the client gets; `error`: what failed, if anything.
    - `streamed`: whether the answer was a stream.
    - `completion`: the answer as an OpenAI `chat.completion` dict, whatever the
      provider's and the client's formats; None when there is none to show (an error, a
      stream that was passed through unfollowed, a Responses route's own answer).
    - `route`: the route's label (provider and model); `tier`: the tier it served.
    - `usage`: the token counts, when known.

    A whole answer may be changed before it is rendered for the client: `replace_text`,
    or edit `completion` and set `changed`. A followed stream's (`follow_stream`) bytes
    are already sent: `append` adds text, sent as one last delta before the finish.
    """

    __slots__ = (
        "request",
        "status",
        "streamed",
        "completion",
        "route",
        "tier",
        "usage",
        "error",
        "changed",
        "appended",
        "open",
    )

    def __init__(
        self,
        request: PluginRequest,
        status: int,
        completion: dict[str, Any] | None,
        route: str,
        tier: str,
        streamed: bool = False,
        usage: Usage | None = None,
        error: str = "",
        open_stream: bool = False,
    ) -> None:
        self.request = request
        self.status = status
        self.streamed = streamed
        self.completion = completion
        self.route = route
        self.tier = tier
        self.usage = usage
        self.error = error
        self.changed = False
        self.appended: list[str] = []
        self.open = open_stream

    @property
    def text(self) -> str | None:
        """The answer's text (its first choice's content), None when it has none."""
        message = self._message()
        content = message.get("content") if message is not None else None
        return content if isinstance(content, str) else None

    def _message(self) -> dict[str, Any] | None:
        if not isinstance(self.completion, dict):
            return None
        choices = self.completion.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None
        message = choices[0].get("message")
        return message if isinstance(message, dict) else None

    def replace_text(self, text: str) -> None:
        """A whole answer's text replaced (a stream's: use `append`)."""
        if self.streamed:
            raise RuntimeError("a streamed answer was sent already: append to it instead")
        message = self._message()
        if message is None:
            raise RuntimeError("this answer has no message to replace the text of")
        message["content"] = text
        self.changed = True

    def append(self, text: str) -> None:
        """Text added at the end of a followed stream, before its finish."""
        if not self.open:
            raise RuntimeError(
                "only a followed stream (request.follow_stream) can be appended to, "
                "and only in post_response"
            )
        if text:
            self.appended.append(text)
            message = self._message()
            if message is not None:
                message["content"] = (message.get("content") or "") + text
