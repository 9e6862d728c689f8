"""``python -m catpose``: the same command line as ``catpose`` (:func:`catpose.cli.main`)."""

import sys

from catpose.cli import main

sys.exit(main())
