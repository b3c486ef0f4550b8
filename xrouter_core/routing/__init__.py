"""The routing decision: logical model names and pinned tiers, the person's text, the
classifiers (built-in and LLM) and their weights, tool-loop stickiness, and the candidate
routes with their fallback order and circuit breaker.

Imports wire formats and the caches it keeps decisions in; never mitmproxy, setup or quality.
"""
