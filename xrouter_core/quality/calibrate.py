"""Choose the built-in classifier's thresholds for a target share of frontier calls.

    python -m xrouter_core.quality.calibrate --target-frontier 0.2 --log logs/requests.jsonl
    python -m xrouter_core.quality.calibrate --target-frontier 0.1 --target-cheap 0.6 --log prompts.txt
    python -m xrouter_core.quality.calibrate --target-quality 0.95    # keep 95 % of frontier quality

It scores a sample of your own traffic with the built-in classifier and prints the
CLASSIFIER_THRESHOLDS line that sends that share of it to frontier (and, with
--target-cheap, that share to cheap; otherwise the low threshold stays as given by
--thresholds, default the built-in classifier's own, capped at the high one). The
thresholds apply wherever the built-in classifier decides: CLASSIFIER_MODE=builtin, and
hybrid when the LLM is absent or fails.

Input files (several may be given; '-' reads standard input), one request per line:
  - a JSON object (the router's request log, or anything alike) with the text in
    `classifier_input` (what the classifier saw; preferred), `prompt`, or `messages`
    (an OpenAI-style message list, reduced as the router does);
  - or plain text: the whole line is one prompt.
JSON objects without any of those fields, and empty lines, are skipped and counted.

--target-quality X reads no log: it chooses the high threshold from the evaluation data
(`quality.sources`), as the highest one (so the fewest frontier calls) at which the
prompts at or above it going to the strong model and the rest to the weak one keep at
least X of the strong model's quality, averaged over the sources (each weighing the
same). Every source is scored by the model trained without it (leave-one-source-out,
as `quality.evaluate` does), so the figure is what traffic unlike the training data
would get; sources where the strong model is not better are skipped. The shares of frontier calls it implies are printed beside.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xrouter_core.config import parse_thresholds
from xrouter_core.quality.progress import progress
from xrouter_core.routing.builtin import BUILTIN_THRESHOLDS, BuiltinClassifier, tier_for
from xrouter_core.routing.extract import classifier_input
from xrouter_core.tiers import TIERS


@dataclass
class Prompts:
    texts: list[str]
    skipped: int = 0


def prompt_of(line: str) -> str | None:
    """The prompt one line stands for, or None when it has none."""
    stripped = line.strip()
    if not stripped:
        return None
    if stripped.startswith("{"):
        try:
            record = json.loads(stripped)
        except ValueError:
            return as_user_message(stripped)  # plain text that happens to start with a brace
        if not isinstance(record, dict):
            return None
        text = record.get("classifier_input")
        if isinstance(text, str) and text.strip():
            return text
        text = record.get("prompt")
        if isinstance(text, str) and text.strip():
            return as_user_message(text)
        messages = record.get("messages")
        if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
            return classifier_input(messages) or None
        return None
    return as_user_message(stripped)


def as_user_message(text: str) -> str:
    """A raw prompt as the classifier would see it (client wrappers removed, length cut)."""
    return classifier_input([{"role": "user", "content": text}]) or text


def read_prompts(lines: Iterable[str]) -> Prompts:
    found = Prompts([])
    for line in lines:
        text = prompt_of(line)
        if text is None:
            found.skipped += bool(line.strip())
        else:
            found.texts.append(text)
    return found


def _between(lower: float, upper: float) -> float:
    """A short threshold strictly above `lower` and at most `upper` (rounded for config files)."""
    for digits in (2, 3, 4, 6):
        value = round((lower + upper) / 2, digits)
        if lower < value <= upper:
            return value
    return upper


def threshold_for_top(scores: Sequence[float], share: float) -> float:
    """A threshold with about `share` of the scores at or above it (ties move together)."""
    ordered = sorted(scores, reverse=True)
    count = round(share * len(ordered))
    if count <= 0:
        return 1.0
    if count >= len(ordered):
        return 0.0
    return _between(ordered[count], ordered[count - 1])


def choose_thresholds(
    scores: Sequence[float],
    target_frontier: float,
    target_cheap: float | None = None,
    current: tuple[float, float] = BUILTIN_THRESHOLDS,
) -> tuple[float, float]:
    high = threshold_for_top(scores, target_frontier)
    if target_cheap is None:
        low = min(current[0], high)
    else:
        low = min(threshold_for_top(scores, 1.0 - target_cheap), high)
    return low, high


def shares(scores: Sequence[float], thresholds: tuple[float, float]) -> tuple[float, float, float]:
    """Shares of cheap, medium and frontier decisions."""
    tiers = [tier_for(score, thresholds) for score in scores]
    return tuple(tiers.count(tier) / len(tiers) for tier in range(len(TIERS)))  # type: ignore[return-value]


def quality_retained_at(
    threshold: float, scored: dict[str, tuple[list[float], list]]
) -> tuple[float, float]:
    """Mean over sources of (quality retained, frontier share) with `threshold`."""
    retained = share = 0.0
    for scores, rows in scored.values():
        sent = [score >= threshold for score in scores]
        quality = sum(r.strong if s else r.weak for s, r in zip(sent, rows, strict=True))
        strong = sum(r.strong for r in rows)
        retained += quality / strong if strong else 1.0
        share += sum(sent) / len(sent)
    return retained / len(scored), share / len(scored)


def threshold_for_quality(
    target: float, scored: dict[str, tuple[list[float], list]]
) -> tuple[float, float, float]:
    """The highest threshold meeting `target` quality retained: (threshold, retained, share)."""
    candidates = sorted(
        {round(s, 4) for scores, _ in scored.values() for s in scores}, reverse=True
    )
    for threshold in [1.0001, *candidates]:
        retained, share = quality_retained_at(threshold, scored)
        if retained >= target:
            return min(threshold, 1.0), retained, share
    retained, share = quality_retained_at(0.0, scored)
    return 0.0, retained, share


def loso_scores(names: list[str] | None = None) -> dict[str, tuple[list[float], list]]:
    """Every source's prompts scored by the built-in model trained without that source."""
    from xrouter_core.quality import evaluate, sources, train_builtin
    from xrouter_core.quality.routellm_data import routed_text

    everything = sources.load_all()
    scored: dict[str, tuple[list[float], list]] = {}
    trained: dict[tuple[str, ...], object] = {}
    chosen = evaluate.folds("loso", everything, names or list(everything))
    with progress("Scoring each source with the model trained without it") as bar:
        for name, train, test in bar(chosen, label="sources", total=len(chosen)):
            gap = (sum(r.strong for r in test) - sum(r.weak for r in test)) / len(test)
            if gap < evaluate.MIN_QUALITY_GAP:
                continue  # the strong model is not better here: nothing to keep
            key = tuple(sorted(sources.counts(train)))
            if key not in trained:
                trained[key] = train_builtin.train(train)
            classifier = BuiltinClassifier(weights=trained[key])  # type: ignore[arg-type]
            scored[name] = ([classifier.score(routed_text(r.prompt)) for r in test], test)
    return scored


def main_quality(args: argparse.Namespace) -> int:
    scored = loso_scores(args.source)
    high, retained, share = threshold_for_quality(args.target_quality, scored)
    low = min(args.thresholds[0], high)
    print(
        f"# evaluation data, leave-one-source-out: {', '.join(scored)} "
        f"({sum(len(rows) for _, rows in scored.values())} prompts)"
    )
    print(
        f"# frontier for score >= {high}: {retained:.1%} of the strong model's quality "
        f"(target {args.target_quality:.1%}) with {share:.1%} frontier calls, mean over sources"
    )
    for name, (scores, rows) in scored.items():
        one, part = quality_retained_at(high, {name: (scores, rows)})
        print(f"#   {name}: quality retained {one:.1%}, frontier {part:.1%}")
    print("# .env (or the environment):")
    print(f"CLASSIFIER_THRESHOLDS={low},{high}")
    print('# or in upstreams.json: "classifier": {"thresholds": ' + json.dumps([low, high]) + "}")
    return 0


def _share(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, not {value}")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xrouter_core.quality.calibrate",
        description="Choose CLASSIFIER_THRESHOLDS for a target share of frontier calls on your own traffic.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-frontier", type=_share, help="e.g. 0.2 for 20 %% of requests")
    target.add_argument(
        "--target-quality",
        type=_share,
        help="e.g. 0.95: keep 95 %% of the frontier model's quality on the evaluation data",
    )
    parser.add_argument(
        "--source", nargs="+", default=None, help="with --target-quality: these sources only"
    )
    parser.add_argument(
        "--target-cheap", type=_share, default=None, help="optional share for the cheap tier"
    )
    parser.add_argument(
        "--log",
        nargs="+",
        default=None,
        help="request log (JSON lines) or prompt files, '-' for stdin",
    )
    parser.add_argument(
        "--thresholds",
        type=parse_thresholds,
        default=BUILTIN_THRESHOLDS,
        help="current thresholds (the low one is kept without --target-cheap)",
    )
    args = parser.parse_args(argv)
    if args.target_quality is not None:
        return main_quality(args)
    if not args.log:
        parser.error("--target-frontier needs --log")
    if args.target_cheap is not None and args.target_cheap + args.target_frontier > 1:
        parser.error("--target-cheap plus --target-frontier must not exceed 1")

    prompts = Prompts([])
    for name in args.log:
        if name == "-":
            found = read_prompts(sys.stdin)
        else:
            path = Path(name)
            if not path.is_file():
                parser.error(f"no such file: {name}")
            with path.open(encoding="utf-8", errors="replace") as handle:
                found = read_prompts(handle)
        prompts.texts.extend(found.texts)
        prompts.skipped += found.skipped
    if not prompts.texts:
        parser.error("no prompts found in " + ", ".join(args.log))

    classifier = BuiltinClassifier()
    scores = [classifier.score(text) for text in prompts.texts]
    thresholds = choose_thresholds(scores, args.target_frontier, args.target_cheap, args.thresholds)
    cheap, medium, frontier = shares(scores, thresholds)
    skipped = f"; lines without a prompt skipped: {prompts.skipped}" if prompts.skipped else ""
    print(f"# {len(scores)} prompts from {', '.join(args.log)}{skipped}")
    print(
        f"# with these thresholds: frontier {frontier:.1%} (target {args.target_frontier:.1%}), "
        f"medium {medium:.1%}, cheap {cheap:.1%}"
    )
    print("# .env (or the environment):")
    print(f"CLASSIFIER_THRESHOLDS={thresholds[0]},{thresholds[1]}")
    print(
        '# or in upstreams.json: "classifier": {"thresholds": ' + json.dumps(list(thresholds)) + "}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
