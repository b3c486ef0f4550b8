#!/usr/bin/env python3
"""Set up xrouter interactively (see xrouter_core/setup/wizard.py); `--yes` for scripts."""

import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from xrouter_core.setup.wizard import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
