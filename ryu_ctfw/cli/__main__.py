"""`python -m ryu_ctfw.cli`, the same as the `ctfw` console script."""

import sys

from ryu_ctfw.cli import main

sys.exit(main())
