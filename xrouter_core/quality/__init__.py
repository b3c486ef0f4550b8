"""Offline routing quality: evaluation data loaders, routing metrics (APGR, CPT), the
evaluation and calibration commands, and the trainer of the built-in classifier's weights.

Run by hand (`python -m xrouter_core.quality.evaluate` …); the running router never imports it.
"""
