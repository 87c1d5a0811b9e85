"""`python -m vivace`: the same entry point as the `vivace` console script."""

import sys

from vivace.cli import main

if __name__ == "__main__":
    sys.exit(main())
