#!/usr/bin/env python3
"""Which local engine and classifier model suit this machine (see xrouter_core/setup/hardware.py)."""

import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from xrouter_core.setup.hardware import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
