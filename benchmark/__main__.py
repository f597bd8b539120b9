"""``python -m benchmark`` is ``dipbench``."""

import sys

from benchmark.cli import main

sys.exit(main())
