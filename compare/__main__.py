"""``python -m compare``: the command line (``compare.cli``)."""

import sys

from compare.cli import main

if __name__ == "__main__":
    sys.exit(main())
