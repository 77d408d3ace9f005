"""The hippocampus localiser at inference: where, roughly, is each hippocampus?

A small VNet (``models.registry.build_localiser``) sees the normalised crop averaged onto a
4 mm grid and rescaled (``preprocessing.resample.localiser_input``; about 40 x 48 x 44 voxels
for a child's head: a few hundredths of a second of compute) and marks, per side, the coarse
voxels that are hippocampus. ``inference.roi`` turns its output into one box around each
hippocampus for the fine networks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lofihippseg.config import from_dict
from lofihippseg.errors import LoFiError
from lofihippseg.inference.sliding_window import whole_volume
from lofihippseg.models.registry import LocaliserSpec, build_localiser, load_weights, without_init
from lofihippseg.preprocessing.resample import localiser_input


@dataclass
class Localiser:
    """A trained localiser network and its spec."""

    spec: LocaliserSpec
    net: torch.nn.Module

    def probabilities(
        self, view: torch.Tensor, spacing: Sequence[float], device: torch.device
    ) -> torch.Tensor:
        """Per-side probabilities (2, d, h, w) on the coarse grid of the (D, H, W) ``view``."""
        coarse = localiser_input(view.float().cpu(), spacing, self.spec.mm)
        return whole_volume(self.net, coarse, device, amp=False)

    def to(self, device: str | torch.device) -> Localiser:
        """Move the network to ``device`` (in place) and return self."""
        self.net.to(device)
        return self


def localiser_from_entry(entry: dict, where: str, device: str | torch.device) -> Localiser:
    """Build the localiser stored in a bundle under ``"localiser"``."""
    if not isinstance(entry, dict) or "state" not in entry or "spec" not in entry:
        raise LoFiError(f"{where}: bad localiser entry (needs spec and state)")
    try:
        spec = from_dict(LocaliserSpec, dict(entry["spec"]))
    except (LoFiError, TypeError) as exc:
        raise LoFiError(f"{where}: bad localiser spec ({exc})") from None
    net = without_init(lambda: build_localiser(spec))
    load_weights(net, entry["state"], f"{where} (localiser)")
    return Localiser(spec, net.float().eval().to(device))
