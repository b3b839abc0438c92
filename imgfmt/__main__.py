"""``python -m imgfmt``: the ``imgfmt`` command, for where its script is not on PATH."""

import sys

from .cli.main import main

sys.exit(main())
