"""`python -m semisup` (also what `torchrun -m semisup` runs)."""

import sys

from semisup.commands.cli import main

sys.exit(main())
