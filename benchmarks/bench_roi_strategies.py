"""End-to-end time and peak memory of ``predict`` on one 159 x 231 x 195 case.

Compares, with the same two width-16 VNets (random weights: the cost does not depend on them):

- ``whole``: whole-volume inference of each view (padded to a multiple of 16), as released;
- ``roi``: our ROI strategy for models without a localiser (half-resolution locating pass of
  both networks, full resolution in a box around each hippocampus);
- ``roi_localiser``: the same with a localiser (an 8-filter VNet on the head at 4 mm, as the
  packaged model has) instead of the half-resolution pass;
- ``roi_grid_1.5mm``: the same on a 1.5 mm working grid (the packaged model's ``grid_mm``; the
  case has 1 mm voxels), probabilities mapped back onto the case's grid;
- ``roi_grid_1.5mm_no_edge``: the same without the edge refinement (``--edge-weight 0``);
- ``roi_grid_1.5mm_refiner``: ``roi_grid_1.5mm`` with an outline refiner as wide as the
  packaged model's (untrained, so it returns the probabilities it is given at its full cost);
- ``monai_sw``: MONAI's plain Gaussian ``sliding_window_inference`` (128^3, overlap 0.25).

Random networks do not find hippocampi, so each VNet is wrapped: it runs in full (all the
cost) and its output is then replaced by a pointwise detector of the two bright hippocampus-
like ellipsoids of the synthetic head. The ROI pass therefore locates a realistic box. The
second view uses the ``legacy`` mode (nearly the image) so that the detector sees them too.

Each setting runs in its own subprocess so that its peak memory (max RSS) is its own.
Usage: ``python benchmarks/bench_roi_strategies.py [--threads 2] [--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHAPE = (159, 231, 195)
SETTINGS = {
    "whole": {"roi": "off", "sliding_window": "off"},
    "roi": {"roi": "on", "sliding_window": "auto"},
    "roi_localiser": {"roi": "on", "sliding_window": "auto"},
    # the shipped model's way: the same, on its 1.5 mm working grid (the case has 1 mm voxels)
    "roi_grid_1.5mm": {"roi": "on", "sliding_window": "auto", "grid": "1.5"},
    # the same without the edge refinement (``--edge-weight 0``): what the refinement costs
    "roi_grid_1.5mm_no_edge": {
        "roi": "on",
        "sliding_window": "auto",
        "grid": "1.5",
        "edge_weight": 0.0,
    },
    # the same with the packaged model's outline refiner (``--refiner``): what it costs
    "roi_grid_1.5mm_refiner": {"roi": "on", "sliding_window": "auto", "grid": "1.5"},
    "monai_sw": {"roi": "off", "sliding_window": "on", "roi_size": (128, 128, 128)},
}
GRID_SETTINGS = (
    "roi_localiser",
    "roi_grid_1.5mm",
    "roi_grid_1.5mm_no_edge",
    "roi_grid_1.5mm_refiner",
)


class Located(torch.nn.Module):
    """Runs a real VNet (its full cost), then answers with a bright-voxel detector."""

    def __init__(self, net: torch.nn.Module, threshold: float = 0.8):
        super().__init__()
        self.net, self.threshold = net, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        bright = 40 * (x - self.threshold)
        return torch.cat([bright, bright], dim=1) + 0 * logits  # sides split by the position


def synthetic_case(path: Path, shape: tuple[int, int, int] = SHAPE) -> Path:
    """A 1 mm head (noisy ellipsoid) with two hippocampus-sized bright ellipsoids.

    A smaller ``shape`` (dry runs) scales the head and the hippocampi with it.
    """
    from lofihippseg.io.nifti import save_volume

    rng = np.random.default_rng(0)
    k = min(shape) / min(SHAPE)
    centre = np.array(shape) / 2
    grid = np.meshgrid(
        *[np.arange(s) - c for s, c in zip(shape, centre, strict=True)], indexing="ij"
    )
    x, y, z = (g / k for g in grid)
    head = (x / 70) ** 2 + (y / 95) ** 2 + (z / 80) ** 2 < 1
    data = head * (100 + 8 * rng.standard_normal(shape))
    for cx in (-27, 27):  # mm from the midline; long axis antero-posterior
        hip = ((x - cx) / 8) ** 2 + ((y + 15) / 20) ** 2 + ((z + 15) / 9) ** 2 < 1
        data[hip] = 250
    affine = np.eye(4)
    affine[:3, 3] = -centre
    return save_volume(data.astype(np.float32), affine, path)


class SideSplit(torch.nn.Module):
    """Left channel on the left half of the array, right channel on the right half."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        half = x.shape[2] // 2
        out[:, 0, half:] = -40
        out[:, 1, :half] = -40
        return out


def run_one(name: str, device: str, threads: int, shape=SHAPE, n_filters: int = 16) -> dict:
    from lofihippseg.inference.api import PredictSettings, predict
    from lofihippseg.inference.localiser import Localiser
    from lofihippseg.inference.model_loading import LoadedModel
    from lofihippseg.models.registry import LocaliserSpec, ModelSpec, build_localiser, build_vnet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = ModelSpec(n_filters=n_filters, view_mode="legacy")
    nets = [SideSplit(Located(build_vnet(spec))).eval() for _ in range(2)]
    model = LoadedModel(spec, nets[0], nets[1], "bench (random weights)")
    if name in GRID_SETTINGS:
        # a real 8-filter localiser (its full cost) answering with the bright-voxel detector,
        # shown the min-max normalised view on its 4 mm grid
        from lofihippseg.inference import localiser as localiser_mod
        from lofihippseg.preprocessing.resample import to_coarse_grid

        localiser_mod.localiser_input = to_coarse_grid
        net = SideSplit(Located(build_localiser(LocaliserSpec()))).eval()
        model.localiser = Localiser(LocaliserSpec(), net)
    if name == "roi_grid_1.5mm_refiner":
        from lofihippseg.inference.model_loading import DEFAULT_MODEL
        from lofihippseg.inference.refiner import Refiner

        packaged = torch.load(DEFAULT_MODEL, weights_only=True)["refiner"]["n_filters"]
        model.refiner = Refiner(packaged).eval()
    with tempfile.TemporaryDirectory() as tmp:
        case = synthetic_case(Path(tmp) / "case.nii.gz", tuple(shape))
        settings = PredictSettings(device=device, qc=True, **SETTINGS[name])
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        report = predict(case, Path(tmp) / "out", model, settings, progress=False)
        seconds = time.perf_counter() - start
        sidecar = json.loads((Path(tmp) / "out" / "case_hipp.json").read_text())
    result = {
        "setting": name,
        "seconds": seconds,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "rss_before_gb": rss0 / 1e6,
        "timings": sidecar["timings"],
        "effective": sidecar["effective"],
        "volumes": report.results[0].row,
    }
    if device == "cuda":
        result["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--only", choices=list(SETTINGS), default=None)
    parser.add_argument("--one", choices=list(SETTINGS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs=3, default=SHAPE, help="case size (dry runs)")
    parser.add_argument("--n-filters", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.one:
        result = run_one(args.one, args.device, args.threads, args.shape, args.n_filters)
        print(json.dumps(result))
        return
    names = [args.only] if args.only else list(SETTINGS)
    results = {}
    for name in names:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--device",
            args.device,
            "--threads",
            str(args.threads),
            "--shape",
            *map(str, args.shape),
            "--n-filters",
            str(args.n_filters),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
        r = results[name]
        print(
            f"{name:<22} {r['seconds']:7.1f} s  peak RSS {r['peak_rss_gb']:5.2f} GB  "
            f"inference {r['timings']['inference_s']:6.1f} s  "
            f"post-processing {r['timings'].get('postprocess_s', 0.0):5.2f} s  "
            f"L {r['volumes']['left_ml']:.2f} mL R {r['volumes']['right_ml']:.2f} mL  "
            f"{r['effective'].get('roi_boxes') or r['effective'].get('roi_fallback', '')}",
            flush=True,
        )
    if "whole" in results:
        base = results["whole"]["seconds"]
        for name, r in results.items():
            print(f"{name:<22} time ratio vs whole-volume: {r['seconds'] / base:5.2f}")
    # what a post-processing step costs: (label, the setting with it, the setting without it)
    steps = (
        ("edge refinement", "roi_grid_1.5mm", "roi_grid_1.5mm_no_edge"),
        ("outline refiner", "roi_grid_1.5mm_refiner", "roi_grid_1.5mm"),
    )
    for label, on, off in steps:
        if {on, off} <= results.keys():
            with_it, without = results[on], results[off]
            print(
                f"{label}: time ratio with / without "
                f"{with_it['seconds'] / without['seconds']:.2f}, post-processing "
                f"{with_it['timings']['postprocess_s']:.2f} s vs "
                f"{without['timings']['postprocess_s']:.2f} s"
            )
    print(
        f"shape {tuple(args.shape)}, device {args.device}, threads {args.threads}, "
        f"n_filters {args.n_filters}, both views"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
