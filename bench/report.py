"""Percentiles and the markdown report of a benchmark run (the JSON is the raw dict)."""

from __future__ import annotations

import math


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN when there is nothing to rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return percentile(values, 50)


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def added(row: dict, direct: dict, key: str) -> float:
    return row[key] - direct[key]


def markdown(results: dict) -> str:
    out: list[str] = [f"## Xrouter benchmark ({results['mode']} run)", ""]
    machine = results.get("machine", {})
    out.append(
        f"{machine.get('cpus')} CPUs, Python {machine.get('python')}; everything on 127.0.0.1; "
        "*added* = the target's percentile minus the direct call's."
    )
    out.append("")
    for name, description in results.get("targets", {}).items():
        out.append(f"- **{name}**: {description}")
    for name, why in results.get("skipped", {}).items():
        out.append(f"- **{name}**: skipped ({why})")
    out.append("")

    latency = results.get("latency", {})
    if latency:
        out += [
            "### Non-streamed requests",
            "",
            "| target | concurrency | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s | proxy CPU µs/req | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for concurrency, rows in latency.items():
            direct = rows["direct"]
            for name, row in rows.items():
                out.append(
                    f"| {name} | {concurrency} | {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | "
                    f"{fmt(added(row, direct, 'p50_ms'))} | {fmt(added(row, direct, 'p99_ms'))} | "
                    f"{fmt(row['rps'], 0)} | {fmt(row.get('cpu_us_per_request') if name != 'direct' else None, 0)} | "
                    f"{row['errors']} |"
                )
        out.append("")

    streams = results.get("streams")
    if streams:
        direct = streams["direct"]
        out += [
            "### Streams",
            "",
            "| target | first chunk p50 ms | added first chunk p50 / p99 ms | chunk gap p50 ms | added gap p50 / p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in streams.items():
            out.append(
                f"| {name} | {fmt(row['first_chunk_p50_ms'])} | "
                f"{fmt(added(row, direct, 'first_chunk_p50_ms'))} / "
                f"{fmt(added(row, direct, 'first_chunk_p99_ms'))} | {fmt(row['gap_p50_ms'])} | "
                f"{fmt(added(row, direct, 'gap_p50_ms'))} / {fmt(added(row, direct, 'gap_p99_ms'))} | "
                f"{row['errors']} |"
            )
        out.append("")

    out += passthrough_table(results.get("passthrough"))

    classifier = results.get("classifier")
    if classifier:
        out += [
            "### Classifier time to decision (slow fake classifier)",
            "",
            "| mode | p50 ms | p99 ms | calls |",
            "|---|---:|---:|---:|",
        ]
        for mode, row in classifier.items():
            out.append(
                f"| {mode} | {fmt(row['p50_ms'], 1)} | {fmt(row['p99_ms'], 1)} | {row['calls']} |"
            )
        out.append("")

    builtin = results.get("builtin")
    if builtin:
        out += ["### Built-in classifier", ""]
        if "skipped" in builtin:
            out.append(f"Skipped: {builtin['skipped']}.")
        else:
            out.append("```")
            out.append(str(builtin))
            out.append("```")
        out.append("")

    memory = results.get("memory")
    if memory:
        marks = list(next(iter(memory.values())).keys())
        out += [
            "### Memory (fresh process per target)",
            "",
            "| target | "
            + " | ".join(f"RSS MiB after {m} req" for m in marks)
            + " | peak MiB | growth |",
            "|---|" + "---:|" * (len(marks) + 2),
        ]
        for name, row in memory.items():
            first, last = row[marks[0]]["rss_mib"], row[marks[-1]]["rss_mib"]
            out.append(
                f"| {name} | "
                + " | ".join(fmt(row[m]["rss_mib"], 1) for m in marks)
                + f" | {fmt(row[marks[-1]]['peak_mib'], 1)} | {fmt((last / first - 1) * 100, 1)} % |"
            )
        out.append("")

    out += goals(results)
    problems = results.get("log_problems")
    if problems:
        out.append("")
        out.append(
            "Error lines in the processes' logs: "
            + ", ".join(f"{name} {count}" for name, count in problems.items())
        )
    return "\n".join(out) + "\n"


PASSTHROUGH_LABELS = {
    "chat": "chat, whole",
    "anthropic": "Messages, whole",
    "chat_stream": "chat, streamed",
    "anthropic_stream": "Messages, streamed",
}


def passthrough_ratios(passthrough: dict) -> dict[str, dict[str, float | None]]:
    """Per proxy: (Anthropic pass-through) / (chat) for the added p50 (whole, and a
    stream's first chunk) and the proxy CPU per request (whole, stream). A stream's end
    is left out: the fake's paced chunks make it vary more than a proxy adds."""
    direct = passthrough.get("direct")
    if not direct:
        return {}

    def ratio(a: float | None, b: float | None) -> float | None:
        if a is None or b is None or math.isnan(a) or math.isnan(b) or a <= 0 or b <= 0:
            return None
        return a / b

    out = {}
    for name, rows in passthrough.items():
        if name == "direct":
            continue
        figures: dict[str, float | None] = {}
        for suffix, key, what in (
            ("", "p50_ms", "added_p50"),
            ("_stream", "first_chunk_p50_ms", "added_first_chunk_p50_stream"),
        ):
            a = added(rows["anthropic" + suffix], direct["anthropic" + suffix], key)
            c = added(rows["chat" + suffix], direct["chat" + suffix], key)
            figures[what] = ratio(a, c)
        for suffix, what in (("", "cpu"), ("_stream", "cpu_stream")):
            figures[what] = ratio(
                rows["anthropic" + suffix]["cpu_us_per_request"],
                rows["chat" + suffix]["cpu_us_per_request"],
            )
        out[name] = figures
    return out


def passthrough_table(passthrough: dict | None) -> list[str]:
    if not passthrough or "direct" not in passthrough:
        return []
    direct = passthrough["direct"]
    out = [
        "### Same-format pass-through: Anthropic Messages vs chat (concurrency 1)",
        "",
        "Chat completions on an OpenAI-wire route against Claude Code-shaped Messages on an "
        "Anthropic route, in the same rounds.",
        "",
        "| target | request | p50 ms | added p50 ms | added p99 ms | added first chunk p50 ms | proxy CPU µs/req | requests | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in passthrough.items():
        for label, row in rows.items():
            base = direct[label]
            streamed = row.get("first_chunk_p50_ms") is not None
            first = fmt(added(row, base, "first_chunk_p50_ms")) if streamed else "—"
            # A stream's end follows the fake's paced chunks: its tail says nothing here.
            p99 = "—" if streamed else fmt(added(row, base, "p99_ms"))
            out.append(
                f"| {name} | {PASSTHROUGH_LABELS.get(label, label)} | {fmt(row['p50_ms'])} | "
                f"{fmt(added(row, base, 'p50_ms'))} | {p99} | "
                f"{first} | {fmt(row.get('cpu_us_per_request'), 0)} | {row['requests']} | "
                f"{row['errors']} |"
            )
    out.append("")
    ratios = passthrough_ratios(passthrough)
    if ratios:
        out += [
            "Messages ÷ chat (below 1: the pass-through costs less than the chat path):",
            "",
            "| target | added p50 whole | added first chunk p50 | CPU/req whole | CPU/req stream |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in ratios.items():
            out.append(
                f"| {name} | {fmt(row['added_p50'])} | {fmt(row['added_first_chunk_p50_stream'])} | "
                f"{fmt(row['cpu'])} | {fmt(row['cpu_stream'])} |"
            )
        out.append("")
    return out


def goals(results: dict) -> list[str]:
    """The issue's goals beside the measured figures (reported, never asserted)."""
    lines = ["### Goals", ""]
    latency = results.get("latency", {})
    one = latency.get("1", {})
    for name in ("router", "xrouter"):
        if name in one and "mitmdump" in one:
            mine = added(one[name], one["direct"], "p50_ms")
            base = added(one["mitmdump"], one["direct"], "p50_ms")
            ratio = mine / base if base > 0 else math.nan
            lines.append(
                f"- {name} added p50 at concurrency 1 = {fmt(ratio)}× plain mitmdump's "
                f"({fmt(mine)} vs {fmt(base)} ms; goal ≤ 1.2×)"
            )
        if name in one and "litellm" in one:
            for concurrency, rows in latency.items():
                for key in ("p50_ms", "p99_ms"):
                    mine = added(rows[name], rows["direct"], key)
                    theirs = added(rows["litellm"], rows["direct"], key)
                    verdict = "lower" if mine < theirs else "NOT lower"
                    lines.append(
                        f"- {name} added {key[:3]} at c={concurrency}: {fmt(mine)} ms vs "
                        f"LiteLLM {fmt(theirs)} ms ({verdict})"
                    )
    lines += fast_lane_goals(latency)
    lines += watched_figures(latency)
    streams = results.get("streams", {})
    for name in ("router", "xrouter"):
        if name in streams:
            value = added(streams[name], streams["direct"], "first_chunk_p50_ms")
            lines.append(f"- {name} added first chunk p50 = {fmt(value)} ms (goal < 2 ms)")
    memory = results.get("memory", {})
    for name in ("router", "xrouter"):
        if name in memory:
            marks = list(memory[name].keys())
            first = memory[name][marks[0]]["rss_mib"]
            last = memory[name][marks[-1]]["rss_mib"]
            lines.append(
                f"- {name} RSS after {marks[-1]} requests = {fmt((last / first - 1) * 100, 1)} % "
                f"above after {marks[0]} (goal ≤ 10 %)"
            )
    ratios = passthrough_ratios(results.get("passthrough") or {})
    for name in ("router", "xrouter"):
        if name in ratios:
            row = ratios[name]
            lines.append(
                f"- {name} same-format pass-through ÷ chat: added p50 {fmt(row['added_p50'])}×, "
                f"first chunk {fmt(row['added_first_chunk_p50_stream'])}×, CPU/req "
                f"{fmt(row['cpu'])}× whole and {fmt(row['cpu_stream'])}× streamed (goal ≤ 1×)"
            )
    classifier = results.get("classifier", {})
    if {"early_abort", "whole_answer"} <= classifier.keys():
        lines.append(
            f"- classifier early abort p50 {fmt(classifier['early_abort']['p50_ms'], 1)} ms vs "
            f"whole answer {fmt(classifier['whole_answer']['p50_ms'], 1)} ms"
        )
    return lines


def fast_lane_goals(latency: dict) -> list[str]:
    """Issue 8's goals for the lean launcher, from the same interleaved rounds."""
    lines: list[str] = []
    one, many = latency.get("1", {}), latency.get("64", {})
    if "xrouter" in one and "mitmdump" in one:
        mine = added(one["xrouter"], one["direct"], "p50_ms")
        base = added(one["mitmdump"], one["direct"], "p50_ms")
        lines.append(
            f"- xrouter added p50 at c=1 = {fmt(mine)} ms above direct (goal ≤ 1.0 ms) and "
            f"{fmt(mine / base if base > 0 else math.nan)}× plain mitmdump's (goal ≤ 0.5×)"
        )
    for name in ("xrouter", "xrouter-w2"):
        if name in many and "mitmdump" in many:
            ratio = many[name]["rps"] / many["mitmdump"]["rps"]
            lines.append(
                f"- {name} requests/s at c=64 = {fmt(ratio)}× plain mitmdump's "
                f"({fmt(many[name]['rps'], 0)} vs {fmt(many['mitmdump']['rps'], 0)}; goal ≥ 2×)"
            )
    if "xrouter-w2" in many and "xrouter" in many:
        ratio = many["xrouter-w2"]["rps"] / many["xrouter"]["rps"]
        lines.append(
            f"- xrouter --workers 2 = {fmt(ratio)}× one worker's requests/s at c=64 (goal > 1×)"
        )
    return lines


def watched_figures(latency: dict) -> list[str]:
    """What 5 live-feed subscribers cost routed requests, from the same rounds."""
    lines: list[str] = []
    for concurrency, rows in latency.items():
        if not {"xrouter", "xrouter-watched", "direct"} <= rows.keys():
            continue
        none, five = rows["xrouter"], rows["xrouter-watched"]
        ratio = added(five, rows["direct"], "p50_ms") / added(none, rows["direct"], "p50_ms")
        cpu = (five.get("cpu_us_per_request") or math.nan) / (
            none.get("cpu_us_per_request") or math.nan
        )
        lines.append(
            f"- c={concurrency}: 5 /events subscribers vs none: added p50 {fmt(ratio)}×"
            f" ({fmt(added(five, rows['direct'], 'p50_ms'))} vs"
            f" {fmt(added(none, rows['direct'], 'p50_ms'))} ms), proxy CPU/request {fmt(cpu)}×,"
            f" req/s {fmt(five['rps'] / none['rps'] if none['rps'] else math.nan)}×"
        )
    return lines
