"""Run the suite: ``python -m benchmarks [--quick] [--json FILE] [--only ITEMS]`` (or ``livegen bench``)."""

import sys

from benchmarks.suite import main

sys.exit(main())
