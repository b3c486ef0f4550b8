"""Offline routing quality: evaluation data loaders (`sources` for every routing source in
datasets/, `routellm_data` for RouteLLM's files), routing metrics (APGR, CPT, bootstrap), the
evaluation and calibration commands, and the trainer of the built-in classifier's weights.

Run by hand (`python -m xrouter_core.quality.evaluate` …); the running router never imports it.
"""
