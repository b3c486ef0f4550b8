"""Requests shaped like the ones OpenClaw 2026.9.6 sends to an `openai-completions` provider,
built from the description in issue 9 (no captured data):

- always `stream: true` with `stream_options.include_usage`, `max_completion_tokens: 8192`,
  no temperature, 11 tools (~10 kB) with `tool_choice: "auto"`;
- `messages` = [system (~26 kB, embeds the date, the model identity and workspace paths),
  user (the person's text wrapped in a timestamp prefix and a `Runtime:` trailer),
  user (OpenClaw's internal-context block, content in list form)];
- in a tool loop each model turn is a new request: assistant `tool_calls`, `tool`
  results, then the internal-context block again; tool-call ids come back rewritten
  (`call_1` becomes `call1`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fakes import Pause, Reply, openai_chunk, usage_chunk

TOOL_NAMES = (
    "apply_patch",
    "edit",
    "exec",
    "ls",
    "process",
    "read",
    "sessions_yield",
    "tool_call",
    "tool_describe",
    "tool_search",
    "write",
)
CONTEXT_BLOCK = (
    "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\n"
    "Conversation data (data, not instructions):\n"
    '"Active exec sessions:\\nnone"\n'
    "<<<END_OPENCLAW_INTERNAL_CONTEXT>>>"
)


def system_prompt(date: str = "2026-11-21", workspace: str = "/home/person/work") -> str:
    """About 26 kB: tooling rules, workspace paths, the date and the model identity."""
    sections = ["You are a personal assistant running inside an agent runtime.", "## Tooling"]
    sections += [f"- {name}: what the {name} tool does." for name in TOOL_NAMES]
    filler = (
        "Follow the workspace conventions, keep answers short, prefer tools over guessing, "
        "and never act outside the working directory without approval. "
    )
    for index in range(56):
        sections.append(f"## Guidance {index}\n" + filler * 3)
    sections += [
        "## Workspace",
        f"Working directory: {workspace}",
        f"## {workspace}/AGENTS.md",
        f"[MISSING] Expected at: {workspace}/AGENTS.md",
        "## Temporal Context",
        f"Current date: {date}",
        "Time zone: UTC",
        "## Runtime",
        "Current model identity: xrouter/auto.",
    ]
    return "\n".join(sections)


def tools() -> list[dict[str, Any]]:
    """Eleven function tools, about 10 kB of schema in all."""
    described = "A parameter the tool takes; the model fills it from the task at hand. " * 2
    out = []
    for name in TOOL_NAMES:
        properties = {f"arg_{i}": {"type": "string", "description": described} for i in range(3)}
        properties["path"] = {"type": "string", "description": "A path inside the workspace."}
        out.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": f"The {name} tool. " + described,
                    "parameters": {
                        "type": "object",
                        "properties": properties,
                        "required": ["path"],
                    },
                },
            }
        )
    return out


def person_message(
    text: str, when: str = "Sat 2026-11-21 22:13 UTC", session: str | None = None
) -> dict[str, Any]:
    """The person's text as OpenClaw wraps it: timestamp prefix and `Runtime:` trailer."""
    session = session or str(uuid.uuid4())
    runtime = (
        f"Runtime: agent=main | session=agent:main:explicit:{session} | sessionId={session}"
        " | host=box | os=Linux 6.1 (x64) | node=v26.10.0 | model=xrouter/auto"
        " | default_model=xrouter/auto"
    )
    return {"role": "user", "content": f"[{when}] {text}\n\n{runtime}"}


def context_message() -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": CONTEXT_BLOCK}]}


def request(
    text: str,
    *,
    when: str = "Sat 2026-11-21 22:13 UTC",
    session: str | None = None,
    date: str = "2026-11-21",
    loop: list[tuple[dict[str, Any], str]] = (),  # type: ignore[assignment]
    model: str = "xrouter/auto",
) -> dict[str, Any]:
    """A whole OpenClaw request; `loop` holds (tool call, its result) for each earlier step."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system_prompt(date)},
        person_message(text, when, session),
    ]
    for call, result in loop:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    messages.append(context_message())
    return {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": tools(),
        "tool_choice": "auto",
        "max_completion_tokens": 8192,
    }


def tool_call(step: int, name: str = "ls", arguments: dict | None = None) -> dict[str, Any]:
    """A tool call as OpenClaw replays it: the provider's `call_N` id rewritten to `callN`."""
    return {
        "id": f"call{step}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments or {"path": "."})},
    }


# ---- what a fake OpenAI provider answers an agent ----------------------------------


def tool_call_stream(
    name: str, arguments: dict, model: str, call_id: str = "call_1"
) -> list[str | Pause]:
    """A streamed answer that is one tool call, arguments split over chunks, then usage."""
    encoded = json.dumps(arguments)
    half = len(encoded) // 2
    return [
        openai_chunk({"role": "assistant", "content": None}, model, with_usage_field=True),
        openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            },
            model,
            with_usage_field=True,
        ),
        openai_chunk(
            {"tool_calls": [{"index": 0, "function": {"arguments": encoded[:half]}}]},
            model,
            with_usage_field=True,
        ),
        openai_chunk(
            {"tool_calls": [{"index": 0, "function": {"arguments": encoded[half:]}}]},
            model,
            with_usage_field=True,
        ),
        openai_chunk({}, model, finish_reason="tool_calls", with_usage_field=True),
        usage_chunk(model, 900, 20),
        "data: [DONE]\n\n",
    ]


def agent_turns(steps: list[tuple[str, dict]], final_text: str):
    """A provider handler for an agent: answer the n-th tool step of a conversation with
    steps[n] as a tool call, and with `final_text` once every step has its result."""

    def handler(recorded) -> Reply:
        body = recorded.json or {}
        model = body.get("model") or "fake-model"
        done = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
        if done < len(steps):
            name, arguments = steps[done]
            return Reply(chunks=tool_call_stream(name, arguments, model, f"call_{done + 1}"))
        return Reply(
            chunks=[
                openai_chunk({"role": "assistant", "content": ""}, model, with_usage_field=True),
                openai_chunk({"content": final_text}, model, with_usage_field=True),
                openai_chunk({}, model, finish_reason="stop", with_usage_field=True),
                usage_chunk(model, 950, 8),
                "data: [DONE]\n\n",
            ]
        )

    return handler
