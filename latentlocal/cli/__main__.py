"""``python -m latentlocal.cli``, the same as the ``latentlocal`` command."""

import sys

from latentlocal.cli import main

if __name__ == "__main__":  # not when a package walk imports it
    sys.exit(main())
