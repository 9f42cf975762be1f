"""`python -m harness` is the `harness` console script."""

import sys

from harness.cli import main

sys.exit(main())
