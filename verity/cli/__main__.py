"""``python -m verity.cli``: the ``verity`` command."""

import sys

from verity.cli.main import main

sys.exit(main())
