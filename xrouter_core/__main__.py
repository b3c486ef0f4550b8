"""`python -m xrouter_core`: the same as the `xrouter` command."""

import sys

from xrouter_core.proxy.launcher import main

sys.exit(main())
