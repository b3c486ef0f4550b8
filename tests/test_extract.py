"""Classifier input extraction and the tool-loop task key, on plain message lists."""

from __future__ import annotations

import asyncio

import openclaw_shapes as oc
import pytest

from xrouter_core.accounting.cache import MemoryCache
from xrouter_core.routing.extract import (
    classifier_input,
    latest_person_message,
    strip_client_wrappers,
)
from xrouter_core.routing.toolloop import TaskTiers, stable_system_prompt, task_of

ASK = "Refactor the billing module into three services and keep the tests green"


def test_openclaw_request_yields_the_persons_text_only():
    body = oc.request(ASK)
    assert classifier_input(body["messages"]) == ASK


def test_openclaw_tool_loop_still_yields_the_persons_text():
    body = oc.request(ASK, loop=[(oc.tool_call(1), "a.py\nb.py"), (oc.tool_call(2), "done")])
    assert classifier_input(body["messages"]) == ASK


def test_retried_request_gives_the_same_input_despite_new_stamp_and_session():
    first = oc.request(ASK, when="Sat 2026-11-21 22:13 UTC")
    retry = oc.request(ASK, when="Sun 2026-11-22 09:01 CET", date="2026-11-22")
    assert classifier_input(first["messages"]) == classifier_input(retry["messages"])


@pytest.mark.parametrize(
    "wrapped",
    [
        # OpenClaw, list-form content, and its context block in the same message.
        [
            {"type": "text", "text": "[Sat 2026-11-21 22:13 UTC] " + ASK},
            {"type": "text", "text": oc.CONTEXT_BLOCK},
        ],
        # Claude Code: reminders before and after the words.
        "<system-reminder>\nAs you answer, use the context below.\n</system-reminder>\n"
        + ASK
        + "\n<system-reminder>The task tools haven't been used recently.</system-reminder>",
        # Cline / Roo Code: the words in <task>, environment details appended.
        f"<task>\n{ASK}\n</task>\n\n<environment_details>\n# Current Time\n"
        "2026/11/21 22:13\n</environment_details>",
        # Codex CLI: environment context and AGENTS.md instructions around the words.
        "<user_instructions>\nUse tabs.\n</user_instructions>\n"
        f"<environment_context>\n  <cwd>/w</cwd>\n</environment_context>\n{ASK}",
    ],
)
def test_known_client_wrappers_are_removed(wrapped):
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": wrapped}]
    assert classifier_input(messages) == ASK


def test_nested_and_unclosed_context_blocks():
    begin, end = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>", "<<<END_OPENCLAW_INTERNAL_CONTEXT>>>"
    nested = f"{ASK}\n{begin}\nouter {begin} inner {end} still outer\n{end}\n"
    assert strip_client_wrappers(nested) == ASK
    assert strip_client_wrappers(f"{ASK}\n{begin}\nnever closed") == ASK


def test_only_wrappers_means_no_text():
    assert strip_client_wrappers(oc.CONTEXT_BLOCK) == ""
    assert strip_client_wrappers("<system-reminder>x</system-reminder>") == ""
    assert strip_client_wrappers("[read_file for 'a.py'] Result:\nline 1") == ""


def test_words_that_merely_look_like_wrappers_stay():
    text = "What does [Sat 2026-11-21 22:13 UTC] mean in a log? Runtime: agent=x is a field."
    assert strip_client_wrappers(text) == text


def test_tool_results_and_system_prompts_never_reach_the_classifier():
    messages = [
        {"role": "system", "content": "SYSTEM SECRET RULES"},
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": None, "tool_calls": [oc.tool_call(1)]},
        {"role": "tool", "tool_call_id": "call1", "content": "TOOL OUTPUT"},
        # Anthropic-shaped tool result inside a user message: no text parts.
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "X"}]},
    ]
    text = classifier_input(messages)
    assert text == ASK


def test_previous_exchange_is_a_short_slice_before_the_ask():
    messages = [
        {"role": "system", "content": "sys"},
        oc.person_message("Plan a migration of our database to Postgres " * 20),
        {"role": "assistant", "content": None, "tool_calls": [oc.tool_call(1)]},
        {"role": "tool", "tool_call_id": "call1", "content": "schema..."},
        {"role": "assistant", "content": "Here is the plan. " * 50 + "Shall I start?"},
        oc.person_message("yes, go ahead"),
        oc.context_message(),
    ]
    text = classifier_input(messages)
    assert text.endswith("\n\nyes, go ahead")
    assert "(earlier request: Plan a migration" in text
    assert "Shall I start?)" in text
    assert "Runtime:" not in text and "schema..." not in text
    assert len(text) < 600


def test_media_without_words_is_the_latest_message():
    messages = [
        {"role": "user", "content": "an older question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]},
    ]
    assert latest_person_message(messages) == (2, "")
    assert classifier_input(messages) == ""


def test_long_asks_keep_head_and_tail():
    ask = "START " + "x" * 5000 + " END"
    text = classifier_input([{"role": "user", "content": ask}])
    assert text.startswith("START") and text.endswith("END") and len(text) <= 2000


# ---- one task per tool loop ---------------------------------------------------------


def test_tool_loop_requests_share_one_task_and_are_follow_ups():
    session = "5d0c7f0e-3f7a-4a43-9d55-0a8b3b3e2c11"
    first = task_of(oc.request(ASK, session=session)["messages"])
    step = task_of(oc.request(ASK, session=session, loop=[(oc.tool_call(1), "ok")])["messages"])
    later = task_of(
        oc.request(
            ASK,
            session=session,
            date="2026-11-22",  # the loop ran past midnight: the system prompt's date changed
            loop=[(oc.tool_call(1), "ok"), (oc.tool_call(2), "ok")],
        )["messages"]
    )
    assert first is not None and step is not None and later is not None
    assert not first.follow_up
    assert step.follow_up and later.follow_up
    assert first.key == step.key == later.key


def test_a_new_message_from_the_person_is_a_new_task():
    body = oc.request(ASK, loop=[(oc.tool_call(1), "ok")])
    first = task_of(body["messages"])
    messages = body["messages"][:-1] + [
        {"role": "assistant", "content": "Done."},
        oc.person_message("now write the changelog"),
        oc.context_message(),
    ]
    second = task_of(messages)
    assert second is not None and first is not None
    assert second.key != first.key and not second.follow_up


def test_other_workspaces_are_other_tasks():
    a = oc.request(ASK)["messages"]
    b = oc.request(ASK)["messages"]
    b[0] = {"role": "system", "content": oc.system_prompt(workspace="/home/other/project")}
    assert task_of(a).key != task_of(b).key


def test_plain_chat_without_tools_is_never_a_follow_up():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    messages.append({"role": "user", "content": "how are you"})
    assert not task_of(messages).follow_up


def test_volatile_parts_of_the_system_prompt_are_normalized():
    a = "Date 2026-11-21T22:13:05Z id 0f8fad5b-d9cb-469f-a165-70867728950e at 22:13 ts 1763763185"
    b = "Date 2026-12-01T08:00:00Z id 7c9e6679-7425-40de-944b-e07fc1f90ae7 at 08:00 ts 1763999999"
    assert stable_system_prompt([{"role": "system", "content": a}]) == stable_system_prompt(
        [{"role": "system", "content": b}]
    )


def test_task_tiers_answer_only_follow_ups():
    tiers = TaskTiers(MemoryCache())
    first = task_of(oc.request(ASK)["messages"])
    body = oc.request(ASK, loop=[(oc.tool_call(1), "ok")])

    async def scenario():
        assert await tiers.tier_of(first) is None
        await tiers.remember(first, 0)
        assert await tiers.tier_of(first) is None  # a first request is always decided
        follow = task_of(body["messages"])
        assert follow.key == first.key
        return await tiers.tier_of(follow)

    assert asyncio.run(scenario()) == 0
