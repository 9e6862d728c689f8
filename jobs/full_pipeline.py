"""The main catpose job: ``python jobs/full_pipeline.py [--config FILE.yaml] [flags]``.

Locally it starts a small Ray; under ``ray job submit`` it joins the cluster (RAY_ADDRESS).
With no arguments it runs offline on the embedded synthetic categories. ``--help`` lists every flag;
``--verbose`` shows Ray's and Ray Data's own progress and log lines (off by default), ``--debug`` the
traceback of an error.
"""

import sys

from catpose.run.runner import main

if __name__ == "__main__":
    sys.exit(main())
