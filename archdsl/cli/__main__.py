"""`python -m archdsl.cli`."""
import sys

from . import main

sys.exit(main())
