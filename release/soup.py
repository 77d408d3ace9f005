"""Average the networks of several training checkpoints into one ("model soup").

Fine-tunings that start from the same weights usually end in one basin of the loss, where the
mean of their weights often predicts better than any of them (Wortsman et al., 2022, "Model
soups"). Every floating-point entry of ``vnet1`` / ``vnet2`` (batch-norm statistics included) is
averaged; the first checkpoint gives everything else (spec, recipe, iteration). Optimiser and
scheduler states are dropped: a soup is for export, not for resuming. The output goes into a run
folder (``OUT/checkpoints/last.pt`` with the first run's ``config.json``) so that
``train_release_model.py --export`` takes it like any run.

Example:
    python release/soup.py runs/soup_t2 runs/v8b runs/v8bc runs/v8c
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

NETWORKS = ("vnet1", "vnet2")
DROPPED = ("optimiser1", "optimiser2", "optimiser_critic", "scheduler1", "scheduler2", "scaler")


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Entry-wise mean of state dicts with the same keys and shapes (integer entries: first's).

    Raises:
        ValueError: when the keys or shapes differ (networks of different architectures).
    """
    first = states[0]
    for other in states[1:]:
        if other.keys() != first.keys() or any(other[k].shape != v.shape for k, v in first.items()):
            raise ValueError("the checkpoints' networks differ in layers or shapes")
    out = {}
    for key, value in first.items():
        if value.is_floating_point():
            out[key] = torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
        else:  # num_batches_tracked
            out[key] = value.clone()
    return out


def soup(checkpoints: list[Path]) -> dict:
    """The first checkpoint with its networks replaced by the mean of all of them."""
    loaded = [torch.load(p, map_location="cpu", weights_only=True) for p in checkpoints]
    out = {k: v for k, v in loaded[0].items() if k not in DROPPED}
    for net in NETWORKS:
        out[net] = average_state_dicts([c[net] for c in loaded])
    out["soup_of"] = [str(p) for p in checkpoints]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path, help="run folder to write (must not exist)")
    p.add_argument("runs", type=Path, nargs="+", help="run folders (or .pt checkpoints) to average")
    p.add_argument("--checkpoint", default="last.pt", help="checkpoint name in each run folder")
    a = p.parse_args(argv)
    if a.out.exists():
        print(f"error: {a.out} exists; choose a new folder", file=sys.stderr)
        return 2
    paths = [r if r.suffix == ".pt" else r / "checkpoints" / a.checkpoint for r in a.runs]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: no checkpoint at {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        result = soup(paths)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (a.out / "checkpoints").mkdir(parents=True)
    config = paths[0].parent.parent / "config.json"
    if config.is_file():
        shutil.copy(config, a.out / "config.json")
    torch.save(result, a.out / "checkpoints" / "last.pt")
    print(f"{a.out}: mean of {len(paths)} checkpoints' networks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
