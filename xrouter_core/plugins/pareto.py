"""The built-in `pareto` plugin: a tier forced per request by a header, or for every
request by configuration, so the classifier is not asked.

Options (upstreams.json `{"use": "pareto", ...}`):
- `header` (default `X-Xrouter-Pareto`): the request header naming the tier, as
  `cheap`, `medium`, `frontier` or `0`, `1`, `2`. Any other value is a 400 that says
  which are allowed. Headers starting with `X-Xrouter-` never reach a provider.
- `tier`: the tier of every request that does not name one in the header.
- `allow`: the tiers the header may choose (default all); another is a 403.
"""

from __future__ import annotations

from collections.abc import Sequence

from xrouter_core.plugins.api import PluginRequest, Reject, tier_name
from xrouter_core.tiers import TIERS

DEFAULT_HEADER = "X-Xrouter-Pareto"


class Pareto:
    """Forces the tier a header or the configuration names (see the module)."""

    name = "pareto"

    def __init__(
        self,
        header: str = DEFAULT_HEADER,
        tier: str | int | None = None,
        allow: Sequence[str | int] | None = None,
    ) -> None:
        if not isinstance(header, str) or not header.strip():
            raise ValueError("header must name a request header")
        self.header = header.strip()
        self.key = self.header.lower()
        self.tier = tier_name(tier) if tier is not None else None
        if tier is not None and self.tier is None:
            raise ValueError(f"tier must be one of {', '.join(TIERS)} or 0, 1, 2, not {tier!r}")
        allowed = [tier_name(item) for item in (TIERS if allow is None else allow)]
        if isinstance(allow, str) or None in allowed or not allowed:
            raise ValueError(f"allow must be a list of tiers ({', '.join(TIERS)}), not {allow!r}")
        self.allow = frozenset(name for name in allowed if name)

    def pre_request(self, request: PluginRequest) -> None:
        value = request.headers.get(self.key)
        if value is None:
            if self.tier is not None:
                request.tier = self.tier
            return
        tier = tier_name(value)
        if tier is None:
            raise Reject(
                400,
                f"{self.header} must be cheap, medium, frontier, 0, 1 or 2, not {value[:40]!r}.",
                "invalid_tier",
            )
        if tier not in self.allow:
            allowed = ", ".join(name for name in TIERS if name in self.allow)
            raise Reject(
                403, f"{self.header} may choose {allowed}, not {tier!r}.", "tier_not_allowed"
            )
        request.tier = tier
