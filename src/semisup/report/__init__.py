"""Run reports: a self-contained HTML page of a run's curves, distributions and config.

`semisup report RUN_DIR` writes it (`semisup.report.page.write_report` from Python); importing
this package does not import matplotlib.
"""

from semisup.engine.metrics import kl_divergence
from semisup.report.command import add_parser, report_after_training, run
from semisup.report.run_data import RunData, load_run

__all__ = [
    "RunData",
    "add_parser",
    "kl_divergence",
    "load_run",
    "report_after_training",
    "run",
]
