"""`python -m harness` is the `harness` console script."""

import signal
import sys

# A Ctrl-C during the imports below (before main() installs the harness's handlers) ends quietly with
# 130: nothing has been created yet.
signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(128 + signum))

from harness.cli import main  # noqa: E402

sys.exit(main())
