"""Builds the image views an algorithm declares, batched on the training device."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

VIEW_KINDS = ("none", "weak", "strong", "strong_cutout", "simclr")


class Transform(Protocol):
    """A batched image transform: uint8 (N, C, H, W) in, uint8 out, randomness from `generator`."""

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor: ...


class ViewMaker:
    """Turns raw uint8 batches into the views named in `Algorithm.views`.

    Kinds: "none" (the image as stored), "weak" (flip + shift), "strong" (weak, then the strong
    policy: CTAugment or RandAugment), "strong_cutout" (strong, then a full-size cutout, as
    FixMatch's strong view; RandAugment policies end with their own cutout, so none is added),
    "simclr" (SimCLR's crop, flip, colour jitter and grey scale on the stored image: CoMatch's
    second strong view, `augment.simclr`).
    Every view is drawn independently, so two "strong" keys give two different augmentations of
    the same images (ReMixMatch's K strong views).

    Args:
        weak: the weak transform.
        strong: the strong policy applied after `weak`; None means no policy (then "strong" is
            just weak, and "strong_cutout" is weak + cutout: the weak+cutout baseline).
        cutout: the cutout transform appended for "strong_cutout".
        strong_has_cutout: `strong` already ends with a cutout (RandAugment).
        simclr: the transform of "simclr" views (None: the kind is not available).
        labeled: the kind that replaces "weak" in the labeled images' views (keys starting with
            "x"): "weak" keeps them, "simclr" gives labeled images SimCLR's crop and colour
            jitter (`augment.labeled`, practical runs).
    """

    def __init__(
        self,
        weak: Transform,
        strong: Transform | None,
        cutout: Transform,
        strong_has_cutout: bool = False,
        simclr: Transform | None = None,
        labeled: str = "weak",
    ) -> None:
        if labeled not in ("weak", "simclr"):
            raise ValueError(f"labeled must be 'weak' or 'simclr', got {labeled!r}")
        if labeled == "simclr" and simclr is None:
            raise ValueError("labeled='simclr' needs a ViewMaker built with a simclr transform")
        self.labeled = labeled
        self.weak = weak
        self.strong = strong
        self.cutout = cutout
        self.strong_has_cutout = strong_has_cutout
        self.simclr = simclr

    def make(self, kind: str, images: Tensor, generator: torch.Generator) -> Tensor:
        """One view of `images`."""
        if kind == "none":
            return images
        if kind == "simclr":
            if self.simclr is None:
                raise ValueError("'simclr' views need a ViewMaker built with a simclr transform")
            return self.simclr(images, generator)
        view = self.weak(images, generator)
        if kind == "weak":
            return view
        if self.strong is not None:
            view = self.strong(view, generator)
        if kind == "strong" or (kind == "strong_cutout" and self.strong_has_cutout):
            return view
        if kind == "strong_cutout":
            return self.cutout(view, generator)
        raise ValueError(f"unknown view kind '{kind}'. Valid kinds: {', '.join(VIEW_KINDS)}")

    def __call__(
        self, views: dict[str, str], x: Tensor, u: Tensor | None, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Views keyed like `views`: keys starting with "x" from `x`, with "u" from `u`."""
        out = {}
        for key, kind in views.items():
            source = x if key.startswith("x") else u
            if kind == "weak" and key.startswith("x"):
                kind = self.labeled
            if source is None:
                raise ValueError(f"view '{key}' needs unlabeled images, but the batch has none")
            out[key] = self.make(kind, source, generator)
        return out
