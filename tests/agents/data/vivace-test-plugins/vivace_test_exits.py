"""A plug-in that calls ``sys.exit()`` at import: vivace must skip it, not exit with it."""

import sys

sys.exit(7)
