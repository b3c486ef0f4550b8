"""200 concurrent requests, half streamed, through one router on loopback: every one is
answered completely and correctly, each is logged once, and nothing goes wrong in the
router's log. Bounded in count and time; speed is the benchmark's business (bench/)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from conftest import unique

from xrouter_core.wire.sse import iter_events

CHAT = "/v1/chat/completions"
TOTAL = 200
TIER_OF_DIGIT = {"0": "cheap", "1": "medium", "2": "frontier"}


async def one(client: httpx.AsyncClient, index: int, prompt: str, digit: str) -> None:
    stream = index % 2 == 1
    body = {
        "model": "xrouter/auto",
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }
    tier = TIER_OF_DIGIT[digit]
    reply = await client.post(CHAT, json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-xrouter-upstream"] == tier
    if stream:
        chunks = [json.loads(e.data) for e in iter_events(reply.content) if e.data != "[DONE]"]
        assert reply.text.rstrip().endswith("data: [DONE]")
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    else:
        text = reply.json()["choices"][0]["message"]["content"]
    assert text == f"Hello from {tier}!"


async def run_all(url: str, prompts: list[tuple[str, str]]) -> None:
    limits = httpx.Limits(max_connections=TOTAL, max_keepalive_connections=TOTAL)
    async with httpx.AsyncClient(
        base_url=url, trust_env=False, timeout=30, limits=limits
    ) as client:
        await asyncio.wait_for(
            asyncio.gather(
                *(one(client, index, *prompts[index % len(prompts)]) for index in range(TOTAL))
            ),
            timeout=60,
        )


def test_200_concurrent_requests(start_router, upstreams, tmp_path):
    router = start_router({"XROUTER_DATA_DIR": str(tmp_path / "data")})
    # A few distinct questions, one per tier, so the decision cache and the classifier
    # both work under load.
    prompts = []
    for digit in "012" * 3:
        prompt = unique(f"load tier {digit}")
        upstreams.classifier.by_text[prompt] = digit
        prompts.append((prompt, digit))
    asyncio.run(run_all(router.url, prompts))

    # Concurrent requests with the same question share one classifier call.
    assert len(upstreams.classifier.requests) == len(prompts)
    served = sum(len(p.requests) for p in (upstreams.cheap, upstreams.medium, upstreams.frontier))
    assert served == TOTAL
    logs = router.logs()
    assert logs.count("routed decision=") == TOTAL
    assert logs.count("status=200") == TOTAL
    for bad in ("Traceback", "ERROR", "error=", "Error"):
        assert bad not in logs
    # Usage is exact: every request counted once, with the tokens the fakes reported
    # (11 + 7 each, streamed or not); counters are flushed periodically.
    expected = {"cheap": 0, "medium": 0, "frontier": 0}
    for index in range(TOTAL):
        expected[TIER_OF_DIGIT[prompts[index % len(prompts)][1]]] += 1
    with router.client() as client:
        assert client.get("/health").status_code == 200
        deadline = time.monotonic() + 15
        while True:
            doc = client.get("/usage").json()
            if doc.get("totalRequests") == TOTAL or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    tiers = doc["tiers"]
    assert {tier: tiers[tier]["requests"] for tier in expected} == expected
    for tier, count in expected.items():
        assert (tiers[tier]["promptTokens"], tiers[tier]["completionTokens"]) == (
            11 * count,
            7 * count,
        )
    assert doc["totalRequests"] == TOTAL
