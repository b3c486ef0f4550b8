"""OpenAI with its Responses API (provider `openai_responses`): a Responses client's
request goes native to `/v1/responses`, its answer and stream come back untouched (usage
read on the side); every other client is served by chat completions, as with `openai`."""

from __future__ import annotations

from collections.abc import Iterable

from xrouter_core.config import Route
from xrouter_core.wire.adapters.base import UpstreamRequest, forward_headers, join_url
from xrouter_core.wire.adapters.openai import OpenAIAdapter
from xrouter_core.wire.inbound import RESPONSES, ChatRequest
from xrouter_core.wire.jsontext import compact_json
from xrouter_core.wire.responses import native_body


class OpenAIResponsesAdapter(OpenAIAdapter):
    responses_wire = True

    def __init__(self) -> None:
        super().__init__("openai_responses")

    def build_request(
        self,
        route: Route,
        request: ChatRequest,
        client_headers: Iterable[tuple[str, str]],
        keep_client_auth: bool = False,
    ) -> UpstreamRequest:
        if request.client_format != RESPONSES or request.responses is None:
            return super().build_request(route, request, client_headers, keep_client_auth)
        body = native_body(request.responses, route.model)
        path = "/responses" if route.base_path else "/v1/responses"
        return UpstreamRequest(
            url=join_url(route.base_url, path),
            headers=forward_headers(client_headers, route, self.auth(route), keep_client_auth),
            body=compact_json(body).encode(),
        )
