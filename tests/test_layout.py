"""The package layout's import rules, checked on the source and on a running import.

- Only `proxy/` imports mitmproxy.
- `wire/` (formats) imports none of `routing/`, `accounting/`, `proxy/`.
- `routing/` and `accounting/` never import `proxy/`.
- The running router (everything but `setup/` and `quality/`) never imports those two.
- `console/` (terminal clients of a router, over HTTP) imports only `wire/` and `tiers`.
- `payments/` (wallet, caps, x402 client) imports none of `proxy/`, `routing/`, `accounting/`.
- `plugins/` (the plugin API, loader, built-in plugins) imports none of `proxy/`, `routing/`,
  `accounting/`, `payments/`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xrouter_core"
TOOLING = ("setup", "quality")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions, as dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def subpackage(path: Path) -> str:
    """The top-level part a file belongs to: 'proxy', 'wire', … or the module's own name."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imports_part(names: set[str], part: str) -> bool:
    prefix = f"xrouter_core.{part}"
    return any(n == prefix or n.startswith(prefix + ".") for n in names)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_keeps_to_its_layer(path: Path):
    names = imported_modules(path)
    part = subpackage(path)
    if part != "proxy":
        assert not any(n == "mitmproxy" or n.startswith("mitmproxy.") for n in names), (
            "only xrouter_core/proxy/ may import mitmproxy"
        )
    if part == "wire":
        for other in ("routing", "accounting", "proxy"):
            assert not imports_part(names, other), f"wire/ must not import {other}/"
    if part in ("routing", "accounting"):
        assert not imports_part(names, "proxy"), f"{part}/ must not import proxy/"
    if part == "payments":
        for other in ("proxy", "routing", "accounting"):
            assert not imports_part(names, other), f"payments/ must not import {other}/"
    if part == "plugins":  # plain objects over the wire types: no router insides
        for other in ("proxy", "routing", "accounting", "payments"):
            assert not imports_part(names, other), f"plugins/ must not import {other}/"
    if part == "console":  # clients of a router over HTTP: none of the router's insides
        for other in ("proxy", "routing", "accounting", *TOOLING):
            assert not imports_part(names, other), f"console/ must not import {other}/"
    if part not in (*TOOLING, "__main__"):
        for tooling in TOOLING:
            assert not imports_part(names, tooling), f"the router must not import {tooling}/"


def test_the_rule_sees_nested_imports(tmp_path):
    """The checker itself: an import inside a function counts as much as one at the top."""
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from xrouter_core.setup import wizard\n    import mitmproxy.http\n"
    )
    names = imported_modules(source)
    assert imports_part(names, "setup") and "mitmproxy.http" in names


def test_loading_the_addon_imports_no_setup_or_quality_module():
    """What the running router really loads: the addon module with everything it pulls in."""
    code = (
        "import sys; import xrouter_core.proxy.addon, xrouter_core.proxy.launcher; "
        "print('\\n'.join(m for m in sys.modules if m.startswith('xrouter_core.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "xrouter_core.proxy.addon" in loaded
    assert not [m for m in loaded if m.split(".")[1] in (*TOOLING, "console")]
