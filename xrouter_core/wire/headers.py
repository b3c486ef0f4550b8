"""The router's own headers, X-Xrouter-*: their names, and the routing headers of an answer.

Every answer to a routed request says how it was routed: the tier index the decision
named (`decision`, 0 cheap to 2 frontier), the classifier's score behind it (`score`,
the probability in [0, 1] that the strong model is needed; only when a classifier
scored), the tier that answered (`upstream`) and which of its candidates (`route`), the routes that failed before it
(`fallback`) and, with the response cache on, whether it answered (`cache`). A client may pin a tier with `tier`. A client's X-Xrouter-* headers
never travel on to a provider. Beside those: the rule that chose (`rule`, when rules are
configured), the request's tags (`tags`), the provider type and model sent (`provider`,
`model`) and, on whole answers only (a stream's headers go before its body), the
answer's tags and token counts (`response-tags`, `input-tokens`, `output-tokens`).

DECISION_HEADER and UPSTREAM_HEADER (the Node Xrouter's settings) name two more headers
with the decision and the route's name (<TIER>_NAME), beside these: `HeaderAliases`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

HEADER_PREFIX = "x-xrouter-"
DECISION_HEADER = "x-xrouter-decision"
SCORE_HEADER = "x-xrouter-score"
UPSTREAM_HEADER = "x-xrouter-upstream"
FALLBACK_HEADER = "x-xrouter-fallback"
# Which candidate of the tier served (its name, else provider/model): a tier may have several.
ROUTE_HEADER = "x-xrouter-route"
CACHE_HEADER = "x-xrouter-cache"
TIER_HEADER = "x-xrouter-tier"
RULE_HEADER = "x-xrouter-rule"
TAGS_HEADER = "x-xrouter-tags"
RESPONSE_TAGS_HEADER = "x-xrouter-response-tags"
PROVIDER_HEADER = "x-xrouter-provider"
MODEL_HEADER = "x-xrouter-model"
INPUT_TOKENS_HEADER = "x-xrouter-input-tokens"
OUTPUT_TOKENS_HEADER = "x-xrouter-output-tokens"

# The headers the router sets on answers, as header-field names: an upstream's own
# headers of these names are replaced.
ANSWER_FIELDS = frozenset(
    name.encode()
    for name in (
        DECISION_HEADER,
        SCORE_HEADER,
        UPSTREAM_HEADER,
        ROUTE_HEADER,
        FALLBACK_HEADER,
        CACHE_HEADER,
        RULE_HEADER,
        TAGS_HEADER,
        RESPONSE_TAGS_HEADER,
        PROVIDER_HEADER,
        MODEL_HEADER,
        INPUT_TOKENS_HEADER,
        OUTPUT_TOKENS_HEADER,
    )
)
CACHE_MISS_FIELD = (CACHE_HEADER.encode(), b"miss")

_DECISION, _SCORE, _UPSTREAM, _FALLBACK = (
    DECISION_HEADER.encode(),
    SCORE_HEADER.encode(),
    UPSTREAM_HEADER.encode(),
    FALLBACK_HEADER.encode(),
)


def header_lookup(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A request's headers by lower-case name, read once per request: the value
    mitmproxy's `Headers.get` gives (several fields of one name joined with ", "), where
    each `Headers.get` scans and lower-cases every field again (3-4 µs a lookup for a
    Claude Code request, ~25 µs for the five session-id names alone)."""
    found: dict[str, str] = {}
    for name, value in fields:
        # As mitmproxy compares names: bytes.lower(), which leaves non-ASCII letters be.
        key = name.lower() if name.isascii() else _ascii_lower(name)
        previous = found.get(key)
        found[key] = value if previous is None else f"{previous}, {value}"
    return found


def _ascii_lower(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").lower().decode("utf-8", "surrogateescape")


def score_text(score: float) -> str:
    """A classifier's score as the header and the log line show it: three decimals."""
    return f"{score:.3f}"


def routing_fields(
    decision: int, upstream: str, fallback: str = "", score: float | None = None
) -> list[tuple[bytes, bytes]]:
    """The routing headers as header fields, in the order they are sent (`score` only when
    a classifier scored, `fallback` only when a route failed first). Bytes, as mitmproxy
    keeps them: built once per answer."""
    fields = [(_DECISION, str(decision).encode())]
    if score is not None:
        fields.append((_SCORE, score_text(score).encode()))
    fields.append((_UPSTREAM, upstream.encode()))
    if fallback:
        fields.append((_FALLBACK, fallback.encode()))
    return fields


def routing_headers(
    decision: int, upstream: str, fallback: str = "", score: float | None = None
) -> dict[str, str]:
    """The same headers as a mapping, for the answers the router makes itself."""
    return {
        name.decode(): value.decode()
        for name, value in routing_fields(decision, upstream, fallback, score)
    }


@dataclass(frozen=True)
class HeaderAliases:
    """The extra routing headers a configuration names: the decision under `decision`,
    the route's name (`names`, tier → name; the tier when absent) under `upstream`.
    Names are lower case; an empty one, or one of the router's own, adds nothing."""

    decision: str = ""
    upstream: str = ""
    names: Mapping[str, str] = field(default_factory=dict)
    # HEADER_ALIASES: one of the router's own header names → another name for it.
    others: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        own = {name.decode() for name in ANSWER_FIELDS}
        object.__setattr__(self, "decision", "" if self.decision in own else self.decision)
        object.__setattr__(self, "upstream", "" if self.upstream in own else self.upstream)
        object.__setattr__(
            self, "_copies", {k.encode(): v.encode() for k, v in self.others.items()}
        )

    def __bool__(self) -> bool:
        return bool(self.decision or self.upstream or self.others)

    @property
    def fields_replaced(self) -> frozenset[bytes]:
        names = (self.decision, self.upstream, *self.others.values())
        return frozenset(n.encode() for n in names if n)

    def copies(self, fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The HEADER_ALIASES names of those of `fields` that have one."""
        copies: dict[bytes, bytes] = self._copies  # type: ignore[attr-defined]
        if not copies:
            return []
        return [(copies[name], value) for name, value in fields if name in copies]

    def fields(self, decision: int, tier: str, name: str = "") -> list[tuple[bytes, bytes]]:
        """`name`: the serving route's own name, when a tier has several candidates."""
        out = []
        if self.decision:
            out.append((self.decision.encode(), str(decision).encode()))
        if self.upstream:
            out.append((self.upstream.encode(), (name or self.names.get(tier) or tier).encode()))
        return out

    def headers(self, decision: int, tier: str, name: str = "") -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.fields(decision, tier, name)}
