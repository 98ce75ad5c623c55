"""``python -m pando``: the ``pando`` command."""
import sys

from pando.cli import main

sys.exit(main())
