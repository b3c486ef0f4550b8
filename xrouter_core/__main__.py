"""`python -m xrouter_core`: the same as the `xrouter` command."""

import sys

from xrouter_core.launcher import main

sys.exit(main())
