"""The three tiers a request can be routed to, cheapest first.

A tier's index is the classifier's answer (0 cheap, 1 medium, 2 frontier); its name is
what settings, headers, logs and /usage use. Every module takes both from here.
"""

from __future__ import annotations

TIERS: tuple[str, ...] = ("cheap", "medium", "frontier")
CHEAP, MEDIUM, FRONTIER = TIERS
# Name → index (a KeyError for anything else): a dict, as it is read on every request.
TIER_INDEX: dict[str, int] = {name: index for index, name in enumerate(TIERS)}
# Where a request goes when nothing decides: no classifier, no text, no answer.
FRONTIER_INDEX = TIER_INDEX[FRONTIER]
