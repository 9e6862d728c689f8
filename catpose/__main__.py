"""``python -m catpose``: the same command line as ``catpose`` (``catpose.cli.main``)."""

import sys

from catpose.cli import main

if __name__ == "__main__":  # importing the module (tests/test_imports.py) runs nothing
    sys.exit(main())
