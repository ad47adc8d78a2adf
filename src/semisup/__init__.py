"""semisup: deep semi-supervised image classification in PyTorch.

`semisup.load(run_dir)` returns the EMA model of a trained run (a `semisup.inference.TrainedModel`,
with `predict(images)`); the rest lives in the subpackages, and the `semisup` command in
`semisup.commands.cli`. Importing this package imports neither torch nor Pillow: `load` is
imported on first use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semisup.inference import load

try:
    __version__ = version("semisup")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "load"]


def __getattr__(name: str) -> Any:
    """Imports `load` (and with it torch) when it is first used."""
    if name == "load":
        from semisup.inference import load

        globals()["load"] = load
        return load
    raise AttributeError(f"module 'semisup' has no attribute {name!r}")
