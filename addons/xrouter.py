"""Entry point: `mitmdump -s addons/xrouter.py`. The logic lives in xrouter_core."""

import sys
from pathlib import Path

# Let `mitmdump -s addons/xrouter.py` work from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xrouter_core.proxy.addon import Xrouter  # noqa: E402

addons = [Xrouter()]
