"""``python -m bnlab`` (and ``torchrun -m bnlab train ...``) is the ``bnlab`` command."""

import sys

from .cli import main

sys.exit(main())
