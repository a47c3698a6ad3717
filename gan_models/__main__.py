"""`python -m gan_models ...`: see gan_models/cli.py."""

import sys

from .cli import main

sys.exit(main())
