"""Refit the last 1x1x1 layer (``out_conv``) of both VNets on frozen features.

The short CPU release run learns features that separate the hippocampi from the rest, but its
output layer is still biased towards background (probabilities stay below 0.5). This step keeps
every other weight fixed and refits the 2 x (n_filters + 1) numbers of each network's output
layer on training patches of the pool (soft Dice + BCE, Adam), then writes a checkpoint file
that ``train_release_model.py --export`` can read.

Example:
    python release/calibrate_output.py runs/release_cpu --out runs/release_cpu/calibrated.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lofihippseg.config import load_settings
from lofihippseg.models.registry import build_vnet, safe_torch_load
from lofihippseg.training import loop
from lofihippseg.training.config import TrainConfig
from lofihippseg.training.data import TrainingSamples
from lofihippseg.training.losses import one_hot_targets, soft_dice_loss


def features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Input of ``out_conv`` (the last features) for a batch."""
    grabbed = []
    hook = net.decoder1.out_conv.register_forward_hook(lambda m, i, o: grabbed.append(i[0]))
    with torch.no_grad():
        net(x)
    hook.remove()
    return grabbed[0]


def refit(
    conv: torch.nn.Conv3d, feats: list[torch.Tensor], targets: list[torch.Tensor], steps: int
) -> None:
    """Fit ``conv`` (in place) to the targets with soft Dice + 0.2 BCE."""
    opt = torch.optim.Adam(conv.parameters(), lr=0.05)
    for step in range(steps):
        opt.zero_grad()
        loss = 0.0
        for f, y in zip(feats, targets, strict=True):
            logits = conv(f)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
            loss = loss + soft_dice_loss(logits, y) + 0.2 * bce
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step}: loss {float(loss) / len(feats):.4f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description="Refit both VNets' output layer on frozen features.")
    p.add_argument("run", type=Path, help="training run folder (uses checkpoints/last.pt)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--patches", type=int, default=48, help="training patches to fit on")
    p.add_argument("--steps", type=int, default=200, help="Adam steps")
    a = p.parse_args()
    config = load_settings(TrainConfig, a.run / "config.json")
    ckpt = safe_torch_load(a.run / "checkpoints" / "last.pt")
    train_cases, _ = loop.collect_cases(config)
    samples = TrainingSamples(train_cases, config.replace(cache_cases=False))
    offset = 10**9  # sample indices never drawn in training
    items = [samples[offset + i] for i in range(a.patches)]
    targets = [one_hot_targets(it["label"][None]) for it in items]
    for key, view in (("vnet1", "image"), ("vnet2", "view2")):
        net = build_vnet(config.model)
        net.load_state_dict(ckpt[key])
        net.eval()
        feats = [features(net, it[view][None]) for it in items]
        print(f"{key}: refitting out_conv on {len(feats)} patches")
        refit(net.decoder1.out_conv, feats, targets, a.steps)
        ckpt[key] = net.state_dict()
    ckpt["calibrated_output"] = True
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
