"""`python -m tinyserve_core.cli …`, the same as the `tinyserve` script."""

import sys

from . import main

sys.exit(main())
