"""``python -m cloudrec``: the same as the ``cloudrec`` command."""
import sys

from cloudrec.cli import main

sys.exit(main())
