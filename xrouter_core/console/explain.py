"""`xrouter explain "text"`: ask a running router how it would route a prompt
(POST /v1/route/explain) without sending it to any provider, and print the answer:

    rule        code-first (tag)
    tags        code
    classifier  frontier by builtin, score 0.500 (not used)
    decision    medium (1) by rule
    candidates  * medium         medium-main                  in 3 out 3 $/1M          closed  412.3 ms 61.2 tok/s (8)
                  frontier       frontier-main                in 10 out 30 $/1M        closed  unmeasured
    rules       local            no: 'xrouter/auto' is not one of the 2 models … lists
                openai-names     no: model 'xrouter/auto' does not start with 'openai/'
                code-first       matched
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import httpx

from xrouter_core.console.watch import router_parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = router_parser(
        "xrouter explain",
        "Show how a running router would route a prompt: the rule that matches, the"
        " classifier's score, the tags and the routes it would try (no provider is called).",
    )
    parser.add_argument("text", nargs="+", help="the prompt, as the person would write it")
    parser.add_argument("--model", default="xrouter/auto", help="the model name to ask for")
    parser.add_argument("--tier", help="pin a tier, as the X-Xrouter-tier header does")
    parser.add_argument("--json", action="store_true", help="print the router's JSON as is")
    return parser.parse_args(argv)


def price_text(row: dict[str, Any]) -> str:
    def one(value: Any) -> str:
        return "?" if value is None else f"{value:g}"

    return f"in {one(row['input_price'])} out {one(row['output_price'])} $/1M"


def measured_text(row: dict[str, Any]) -> str:
    """The route's measured p50 time to first byte and tokens/s, with the number of
    samples they come from (an older router sends none: nothing is shown)."""
    if "samples" not in row:
        return ""
    if not row["samples"]:
        return "  unmeasured"
    ttfb, tps = row.get("p50_ttfb_ms"), row.get("tokens_per_s")
    speed = "" if tps is None else f" {tps:g} tok/s"
    return f"  {ttfb:g} ms{speed} ({row['samples']})"


def render(doc: dict[str, Any], out: TextIO) -> None:
    rule = doc.get("rule")
    out.write(
        f"{'rule':<12}{rule['name'] + ' (' + rule['kind'] + ')' if rule else 'none: pinned'}\n"
    )
    out.write(f"{'tags':<12}{', '.join(doc['tags']) or '-'}\n")
    classifier = doc.get("classifier")
    if classifier:
        score = "" if classifier["score"] is None else f", score {classifier['score']:.3f}"
        out.write(
            f"{'classifier':<12}{classifier['tier']} by {classifier['source']}{score}"
            f" ({'used' if rule and rule['kind'] == 'tier' else 'not used'})\n"
        )
    decision = doc["decision"]
    out.write(f"{'decision':<12}{decision['tier']} ({decision['index']}) by {decision['source']}\n")
    for n, row in enumerate(doc["candidates"]):
        head = "candidates" if n == 0 else ""
        mark = "*" if row["chosen"] else " "
        extra = "".join(f"  {name} {row[name]}" for name in ("score", "weight") if name in row)
        out.write(
            f"{head:<12}{mark} {row['key']:<14} {row['label']:<28} {price_text(row):<24}"
            f" {row['circuit']}{measured_text(row)}{extra}\n"
        )
    for n, row in enumerate(doc["rules"]):
        head = "rules" if n == 0 else ""
        verdict = "matched" if row["matched"] else "no: " + row.get("why", "")
        out.write(f"{head:<12}{row['name']:<16} {verdict}\n")


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parse_args(argv)
    headers = {"authorization": f"Bearer {args.key}"} if args.key else {}
    if args.tier:
        headers["x-xrouter-tier"] = args.tier
    body = {"model": args.model, "messages": [{"role": "user", "content": " ".join(args.text)}]}
    try:
        reply = httpx.post(
            args.url.rstrip("/") + "/v1/route/explain",
            json=body,
            headers=headers,
            timeout=30,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        print(f"xrouter explain: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    try:
        doc = reply.json()
    except ValueError:
        doc = None
    if reply.status_code != 200 or not isinstance(doc, dict):
        message = (doc or {}).get("error", {}).get("message") if isinstance(doc, dict) else None
        print(
            f"xrouter explain: HTTP {reply.status_code}: {message or reply.text[:200]}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        render(doc, out)
    return 0
