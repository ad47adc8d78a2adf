"""The `semisup` command line: one module per command.

The `semisup` command imports this package before anything loads torch, so OpenMP's threads
sleep instead of spinning while they wait (OMP_WAIT_POLICY=PASSIVE, unless set already): on a
CPU shared with other work, spinning threads made small batched operations 10x slower
(benchmarks/README.md, "Process settings"). `commands.process` tunes the allocator at start.
"""

import os
import sys

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
