"""The dashboard page and the plotly.js it draws with, as local answers."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from xrouter_core.wire.local import LocalResponse


@cache
def _dashboard_html() -> bytes:
    return (Path(__file__).with_name("dashboard.html")).read_bytes()


@cache
def _plotly_js() -> bytes:
    """plotly.js as bundled in the installed `plotly` package: no CDN, works offline."""
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()


def dashboard_page() -> LocalResponse:
    return LocalResponse(
        200,
        _dashboard_html(),
        {
            "content-type": "text/html; charset=utf-8",
            "cache-control": "no-store",
            "content-security-policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        },
    )


def plotly_script() -> LocalResponse:
    return LocalResponse(
        200,
        _plotly_js(),
        {"content-type": "text/javascript; charset=utf-8", "cache-control": "max-age=86400"},
    )
