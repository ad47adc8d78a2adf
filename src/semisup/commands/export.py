"""`semisup export`: a run's EMA model as ONNX or as a `torch.export` program, input step included.

Both formats take what `TrainedModel.preprocess` (and so `semisup predict`) gives the network:
uint8 images (N, C, S, S) with values 0..255, the run's channel count and image side, any batch
size N. The graph scales them itself as in training (`to_model_input`: to [−1, 1], or with the
model's own mean and std for a timm model) and returns
two outputs: `logits` (N, K) and `probabilities` (N, K), their softmax, which is what
`semisup predict` reports. The class names and the input shape travel in the file: ONNX
`metadata_props` "class_names" and "image_shape" (JSON), and "semisup.json" among the extra files
of the .pt2 program (`torch.export.load(path, extra_files={"semisup.json": ""})`).

ONNX export uses PyTorch's torch.export-based exporter, which needs the `onnx` and `onnxscript`
packages (`pip install 'semisup[export]'`, which also brings `onnxruntime` to run the file). The
TorchScript format is deprecated in PyTorch 2.9+, so the PyTorch-native format offered is
torch.export's .pt2 (load it with `torch.export.load(path).module()`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from semisup.errors import UserError
from semisup.files import atomic_path
from semisup.inference import TrainedModel, load
from semisup.models.inputs import input_normalization, to_model_input

log = logging.getLogger("semisup")

EXPORT_HINT = "Free some disk space or choose another path"

ONNX_PACKAGES = ("onnx", "onnxscript")
OUTPUT_NAMES = ("logits", "probabilities")


class WithInputStep(nn.Module):
    """A classifier that takes uint8 images and returns (logits, probabilities).

    Args:
        model: the network, which takes `to_model_input` of the images (with its
            `input_normalization`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.normalization = input_normalization(model)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(to_model_input(images, normalization=self.normalization))
        return logits, logits.softmax(dim=1)


def export_program(trained: TrainedModel) -> torch.export.ExportedProgram:
    """The EMA model with its input step, traced by `torch.export` on the CPU, batch axis free."""
    module = WithInputStep(copy.deepcopy(trained.model).cpu().float()).eval()
    example = torch.zeros((2, *trained.image_shape), dtype=torch.uint8)
    batch = torch.export.Dim("batch")
    with _quiet_exporter():
        return torch.export.export(module, (example,), dynamic_shapes={"images": {0: batch}})


def run_metadata(trained: TrainedModel) -> dict[str, str]:
    """What a user of the exported file needs besides the graph, as JSON strings."""
    channels, size, _ = trained.image_shape
    return {
        "class_names": json.dumps(list(trained.class_names)),
        "image_shape": json.dumps(list(trained.image_shape)),
        "input": (
            f"images: uint8 (N, {channels}, {size}, {size}), values 0..255, "
            f"{'grey' if channels == 1 else 'RGB'}, the centred square resized to {size}x{size}"
        ),
        "outputs": "logits (N, K); probabilities (N, K), softmax of the logits",
        "step": str(trained.step),
    }


def export_onnx(trained: TrainedModel, path: str | Path) -> Path:
    """Writes the EMA model with its input step as one self-contained ONNX file.

    Raises:
        UserError: when the onnx or onnxscript package is missing, or the file cannot be
            written.
    """
    require_onnx()
    _check_folder(path)
    return write_onnx(export_program(trained), run_metadata(trained), path)


def export_pt2(trained: TrainedModel, path: str | Path) -> Path:
    """Writes the EMA model with its input step as a `torch.export` program (.pt2)."""
    _check_folder(path)
    return write_pt2(export_program(trained), run_metadata(trained), path)


def require_onnx() -> None:
    """Raises a UserError with the install command when an ONNX export package is missing."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"ONNX export needs the {' and '.join(missing)} package(s): "
            "pip install 'semisup[export]'"
        )


def write_onnx(
    program: torch.export.ExportedProgram, metadata: dict[str, str], path: str | Path
) -> Path:
    """Converts an `export_program` to ONNX (PyTorch's default opset) and writes it."""
    with _quiet_exporter():
        onnx_program = torch.onnx.export(
            program, (), None, output_names=list(OUTPUT_NAMES), verbose=False
        )
    onnx_program.model.metadata_props.update(metadata)
    with atomic_path(path, EXPORT_HINT) as target:
        onnx_program.save(target, external_data=False)
    return Path(path)


def write_pt2(
    program: torch.export.ExportedProgram, metadata: dict[str, str], path: str | Path
) -> Path:
    """Writes an `export_program` with the metadata as the extra file "semisup.json"."""
    with atomic_path(path, EXPORT_HINT) as target:
        torch.export.save(program, target, extra_files={"semisup.json": json.dumps(metadata)})
    return Path(path)


def _check_folder(path: str | Path) -> None:
    folder = Path(path).parent
    if Path(path).is_dir():
        raise UserError(f"cannot write {path}: it is a folder; give a file name inside it")
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: the folder {folder} does not exist")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hides the exporters' warnings about optional packages and deprecations (not errors)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Registers `semisup export` on the `semisup` subcommand parser."""
    parser = commands.add_parser(
        "export",
        help="write a run's EMA model as ONNX (--onnx) or torch.export .pt2 (--pt2)",
        description="Exports the EMA model of a run with its input step: uint8 images (N, C, S, "
        "S), 0..255, prepared like `semisup predict` does, in; logits and probabilities out.",
    )
    parser.add_argument("run_dir", help="a run directory (the --out of `semisup train`)")
    parser.add_argument("--onnx", metavar="PATH", help="write an ONNX file here")
    parser.add_argument("--pt2", metavar="PATH", help="write a torch.export program here")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Writes the requested files and prints what they take and return."""
    if not args.onnx and not args.pt2:
        raise UserError("nothing to export: give --onnx PATH and/or --pt2 PATH")
    if args.onnx:
        require_onnx()
    candidates = ((args.onnx, write_onnx), (args.pt2, write_pt2))
    targets = [(path, write) for path, write in candidates if path]
    for path, _ in targets:
        _check_folder(path)
    trained = load(args.run_dir, "cpu")
    program, metadata = export_program(trained), run_metadata(trained)
    for path, write in targets:
        print(f"wrote {write(program, metadata, path)}")
    print(f"input {metadata['input']}\noutputs {metadata['outputs']}")
    print(f"classes {', '.join(trained.class_names)}")
    return 0
