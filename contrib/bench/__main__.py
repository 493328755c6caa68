"""Entry point of `python -m contrib.bench`."""

import sys

from contrib.bench.cli import main

sys.exit(main())
