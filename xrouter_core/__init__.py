"""Xrouter: send each LLM request to the cheapest model that can handle it."""

__version__ = "0.1.0"
