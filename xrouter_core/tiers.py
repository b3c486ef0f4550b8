"""The three tiers a request can be routed to, cheapest first.

A tier's index is the classifier's answer (0 cheap, 1 medium, 2 frontier); its name is
what settings, headers, logs and /usage use. Every module takes both from here.
"""

from __future__ import annotations

TIERS: tuple[str, ...] = ("cheap", "medium", "frontier")
CHEAP, MEDIUM, FRONTIER = TIERS


def tier_index(name: str) -> int:
    """0, 1 or 2 for a tier's name; ValueError for anything else."""
    return TIERS.index(name)
