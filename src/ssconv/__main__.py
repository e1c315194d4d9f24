"""``python -m ssconv``."""

import sys

from ssconv.cli.main import main

sys.exit(main())
