"""Starting a run from pretrained weights: `model.pretrained=SOURCE` and `--init-from RUN_DIR`.

A SOURCE is one of:
- a weights file: a PyTorch state dict (`.pth`, `.pt`, `.bin`, read with `weights_only=True`),
  a `.safetensors` file, or a checkpoint dict holding the state dict under `state_dict` or
  `model` (a "module." prefix from DistributedDataParallel is removed);
- a semisup run directory (the `--out` of `semisup train`): its EMA weights, and the classes it
  was trained on (from its summary.json);
- `hf-hub:ORGANISATION/NAME` for a timm model: timm's own loader reads the Hugging Face hub, or
  its local cache when offline (`HF_HUB_OFFLINE=1`).

The weights fill the model's backbone exactly: a backbone weight the source lacks, one it has
that the model does not, or one of another shape stops the run with a UserError naming them.
The classifier (`model.head`) is taken when it fits; when the source has none, one of another
shape, or (for a run directory) other classes, the head keeps its fresh random initialisation
and a note says so. For timm models, plain timm state dicts (keys as in `timm.create_model`)
and semisup's own (keys under "net.") are both accepted; a plain timm state dict goes through
the architecture's `checkpoint_filter_fn` first (`TimmClassifier.adapt_state_dict`).
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from semisup.config import config_from_dict
from semisup.engine.checkpoint import load_checkpoint
from semisup.errors import UserError
from semisup.inference import run_class_names_and_shape
from semisup.models.timm_backbone import TimmClassifier

log = logging.getLogger("semisup")

HUB_PREFIX = "hf-hub:"
# Buffers that older state dicts lack and that nothing depends on (BatchNorm's step counter).
OPTIONAL_KEYS = ("num_batches_tracked",)
SHOWN = 5  # names listed in an error message


@dataclass(frozen=True)
class Weights:
    """A state dict read from a SOURCE, and the class names it was trained on when known."""

    state: dict[str, Tensor]
    class_names: tuple[str, ...] | None = None


def run_directory(source: str | None) -> Path | None:
    """`source` as a semisup run directory (one holding checkpoint.pt), else None."""
    if source is None or source.startswith(HUB_PREFIX):
        return None
    path = Path(source).expanduser()
    return path if (path / "checkpoint.pt").is_file() else None


def read_weights(source: str, model: nn.Module) -> Weights:
    """Reads the weights SOURCE names (see the module docstring) for `model`.

    Raises:
        UserError: when the source does not exist, cannot be read, or holds no state dict.
    """
    if source.startswith(HUB_PREFIX):
        if not isinstance(model, TimmClassifier):
            raise UserError(
                f"model.pretrained={source} loads through timm: set model.name=timm:<architecture>"
            )
        state, normalization = model.hub_state_dict(source)
        model.input_normalization = normalization
        return Weights(state)
    run_dir = run_directory(source)
    if run_dir is not None:
        checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
        cfg = config_from_dict(checkpoint["config"])
        class_names, _ = run_class_names_and_shape(run_dir, cfg)
        return Weights(checkpoint["ema"], tuple(class_names))
    path = Path(source).expanduser()
    if path.is_dir():
        raise UserError(
            f"model.pretrained={source} is a directory without checkpoint.pt: give a run "
            "directory of `semisup train`, a weights file, or hf-hub:ORGANISATION/NAME"
        )
    if not path.is_file():
        raise UserError(
            f"model.pretrained={source}: no such file or directory (give a weights file "
            "(.pth, .pt, .bin, .safetensors), a run directory, or hf-hub:ORGANISATION/NAME)"
        )
    return Weights(_state_dict_of(_read_file(path), path))


def _read_file(path: Path) -> object:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise UserError(
                f"reading {path} needs the safetensors package: pip install safetensors"
            ) from e
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise UserError(f"{path} is not a readable safetensors file ({e})") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if unsafe is None:
            raise UserError(f"{path} is not a readable PyTorch file") from e
        raise UserError(
            f"{path} holds more than weights (objects of type {unsafe.group(1)}, which PyTorch "
            "does not unpickle with weights_only=True); for a semisup checkpoint give its run "
            "directory"
        ) from e
    except Exception as e:  # torch raises many types for files that are not checkpoints
        raise UserError(f"{path} is not a readable PyTorch file ({type(e).__name__}: {e})") from e


def _state_dict_of(content: object, path: Path) -> dict[str, Tensor]:
    """The state dict inside a loaded file (itself, or under "state_dict" / "model")."""
    if isinstance(content, dict):
        for key in ("state_dict", "model"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not content:
        raise UserError(f"{path} holds no state dict (a mapping of names to tensors)")
    if not all(isinstance(v, Tensor) for v in content.values()):
        raise UserError(
            f"{path} is a checkpoint without a state dict under 'state_dict' or 'model' "
            f"(its keys: {', '.join(sorted(map(str, content))[:SHOWN])})"
        )
    if all(str(k).startswith("module.") for k in content):
        content = {str(k)[len("module.") :]: v for k, v in content.items()}
    return {str(k): v for k, v in content.items()}


def head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier (`model.head`)."""
    head = model.head
    path = next(name for name, module in model.named_modules() if module is head)
    return {f"{path}.{key}" for key in head.state_dict()}


def load_pretrained(model: nn.Module, source: str, class_names: tuple[str, ...]) -> None:
    """Fills `model` with the weights of SOURCE; a classifier that does not fit is left new.

    Args:
        model: a freshly built model (its head keeps its initialisation when not loaded).
        source: see the module docstring.
        class_names: the classes of this run (a run directory's classes are compared).

    Raises:
        UserError: when the source cannot be read, or its backbone weights do not match the
            model's (naming the missing, unexpected and mismatched weights).
    """
    weights = read_weights(source, model)
    state = weights.state
    if isinstance(model, TimmClassifier) and not any(k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in model.adapt_state_dict(state).items()}
    own = model.state_dict()
    head = head_keys(model)
    reason = _head_mismatch(state, own, head, weights.class_names, class_names)
    _check_backbone(state, own, head, source)
    if reason is None:
        log.info("model.pretrained: loaded %s, classifier included", source)
    else:
        log.info(
            "model.pretrained: loaded the backbone of %s; the classifier (%s) is %s, so it "
            "starts from a new random initialisation",
            source,
            ", ".join(sorted(head)),
            reason,
        )
    keep = head if reason is not None else set()
    merged = {k: (own[k] if k in keep or k not in state else state[k]) for k in own}
    model.load_state_dict(merged)


def _head_mismatch(
    state: dict[str, Tensor],
    own: dict[str, Tensor],
    head: set[str],
    source_classes: tuple[str, ...] | None,
    classes: tuple[str, ...],
) -> str | None:
    """Why the source's classifier cannot be used here, or None when it can."""
    missing = sorted(k for k in head if k not in state)
    if missing:
        return "not in the source"
    shapes = [k for k in sorted(head) if state[k].shape != own[k].shape]
    if shapes:
        k = shapes[0]
        return f"of shape {tuple(state[k].shape)} in the source, {tuple(own[k].shape)} here"
    if source_classes is not None and source_classes != tuple(classes):
        return (
            f"trained on other classes ({', '.join(source_classes[:SHOWN])}, ...) than this "
            f"run's ({', '.join(classes[:SHOWN])}, ...)"
        )
    return None


def _check_backbone(
    state: dict[str, Tensor], own: dict[str, Tensor], head: set[str], source: str
) -> None:
    """Raises a UserError naming the backbone weights that do not match."""

    def required(key: str) -> bool:
        return key not in head and not key.endswith(OPTIONAL_KEYS)

    missing = sorted(k for k in own if required(k) and k not in state)
    unexpected = sorted(k for k in state if k not in head and k not in own)
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and k not in head and state[k].shape != own[k].shape
    )
    problems = [
        f"{len(names)} {what}: {', '.join(names[:SHOWN])}{', ...' if len(names) > SHOWN else ''}"
        for what, names in (
            ("missing from the source", missing),
            ("unexpected in the source", unexpected),
            ("of another shape (source vs model)", mismatched),
        )
        if names
    ]
    if problems:
        raise UserError(
            f"the weights of model.pretrained={source} do not fit this model's backbone: "
            f"{'; '.join(problems)}. Is it the same architecture (model.name and its options)?"
        )
