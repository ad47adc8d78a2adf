"""`python -m semisup` (also what `torchrun -m semisup` runs)."""

import sys

from semisup.cli import main

sys.exit(main())
