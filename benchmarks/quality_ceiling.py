"""How far a per-side quality estimate can go with this model: the ceiling of the signals.

Issue 34 asks, on the held-back sides, for an AUC >= 0.95 for finding sides with Dice < 0.6 and a
review flag that catches 90 % of them while flagging <= 10 % of sides at or above 0.7. Three
measurements of what the available signals allow, on the tables ``python -m
lofihippseg.recipe.quality_fit`` builds (``WORK/train``, ``WORK/held``, with saved cases):

- ``features``: each per-side feature alone, then linear fits of all of them, as a Dice
  regression (ridge) and as a classifier of sides under 0.6 against sides at or above 0.7
  (logistic): trained on the training table (what an estimator can do on new anatomy) and
  fitted on the held-back table itself (in sample: an upper bound for any estimator that
  combines these features linearly; nothing fitted elsewhere does better on these sides).
- ``second-opinion``: each held-back head segmented twice more, by the other pair (``t1``) and
  by the same pair on a 1.25 mm grid; the Dice of each with predict's outline, alone and
  averaged with the shipped estimator (by ranks), and the seconds each costs.
- ``image-network``: a small 3D network that reads a 48 mm cube (1 mm voxels) around each side
  (the scan, the outline, the fused probability, the views' absolute difference; the left side
  mirrored), trained on the training table's saved cases to predict the Dice; held back alone
  and averaged with the estimator.

- ``learning-curve``: the shipped fit on a third, half, three quarters and all of the training
  table's cases (3 draws each): whether more scans of the training anatomy would help.

Each prints the issue's figures (``recipe.quality_fit.figures``; catch and false flags at the
threshold that catches 90 % of the held-back sides under 0.6, i.e. the best any threshold
could do).

Example:
    OMP_NUM_THREADS=1 python benchmarks/quality_ceiling.py features --work runs/quality3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage, stats

from lofihippseg.inference.model_loading import DEFAULT_MODEL
from lofihippseg.metrics.overlap import mask_dice
from lofihippseg.quality.estimator import QualityEstimator, estimator_path
from lofihippseg.quality.features import FEATURES
from lofihippseg.recipe.quality_data import iter_saved
from lofihippseg.recipe.quality_fit import GOOD, LOW, figures, load_rows, matrix, review_threshold

CUBE = 48  # mm (1 mm voxels): a hippocampus (about 40 x 20 x 20 mm) and its surroundings


def show(name: str, pred: np.ndarray, dice: np.ndarray) -> None:
    """The issue's figures of ``pred`` (higher = better), flags at the 90 %-catch threshold."""
    flags = pred < review_threshold(pred, dice, 0.9)
    f = figures(pred, dice, flags)
    print(
        f"  {name:44s} Spearman {f['spearman']:+.3f}  AUC(<0.6) {f['auc_below_0.6']:.3f}  "
        f"catch {f.get('catch_rate', float('nan')):.1%}  false flags {f['false_flag_rate']:.1%}"
    )


def ranks(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x) / len(x)


def _standardise(fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = fit.mean(0), fit.std(0) + 1e-9
    return [(a - mu) / sd for a in (fit, *others)]


def ridge(x: np.ndarray, y: np.ndarray, x_eval: np.ndarray, lam: float = 1.0) -> np.ndarray:
    x, x_eval = _standardise(x, x_eval)
    a = np.c_[x, np.ones(len(x))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y)
    return np.c_[x_eval, np.ones(len(x_eval))] @ w


def logistic(x: np.ndarray, y: np.ndarray, x_eval: np.ndarray, l2: float) -> np.ndarray:
    """Minus the log-odds of Dice < 0.6 (fitted on sides < 0.6 or >= 0.7): higher = better."""
    x, x_eval = _standardise(x, x_eval)
    keep = (y < LOW) | (y >= GOOD)
    xt = torch.tensor(x[keep], dtype=torch.float64)
    yt = torch.tensor((y[keep] < LOW).astype(float))
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500)

    def loss() -> torch.Tensor:
        opt.zero_grad()
        z = xt @ w[:-1] + w[-1]
        out = torch.nn.functional.binary_cross_entropy_with_logits(z, yt) + l2 * (w[:-1] ** 2).sum()
        out.backward()
        return out

    opt.step(loss)
    with torch.no_grad():
        return -(torch.tensor(x_eval) @ w[:-1] + w[-1]).numpy()


def shipped_predictions(rows: list[dict]) -> np.ndarray:
    est = QualityEstimator.load(estimator_path(DEFAULT_MODEL))
    return est.predict_rows(matrix(rows, est.features))


def run_features(work: Path) -> None:
    train, held = load_rows(work / "train"), load_rows(work / "held")
    names = [n for n in FEATURES if np.ptp(matrix(train, [n])) > 0]  # absent signals dropped
    xt, xh = matrix(train, names), matrix(held, names)
    yt, yh = (np.array([r["dice"] for r in rows]) for rows in (train, held))
    print(f"held back: {len(yh)} sides, {(yh < LOW).sum()} under 0.6; training {len(yt)}")
    print("each feature alone (its sign chosen on the held-back sides):")
    for k, name in enumerate(names):
        x = xh[:, k] * np.sign(stats.spearmanr(xh[:, k], yh)[0] or 1.0)
        show(name, x, yh)
    print(f"all {len(names)} features:")
    show("shipped estimator (5 features, trees)", shipped_predictions(held), yh)
    show("ridge, trained on the training table", ridge(xt, yt, xh), yh)
    show("ridge, fitted on the held-back table (ceiling)", ridge(xh, yh, xh), yh)
    for l2 in (1e-1, 1e-2, 1e-3):
        show(f"logistic l2={l2:g}, training table", logistic(xt, yt, xh, l2), yh)
        show(f"logistic l2={l2:g}, held-back table (ceiling)", logistic(xh, yh, xh, l2), yh)


def run_second_opinion(work: Path, out: Path) -> None:
    """Predict's outline of every held-back head against two more segmentations of it."""
    from lofihippseg.inference.model_loading import load_model
    from lofihippseg.inference.predictor import Predictor
    from lofihippseg.inference.settings import PredictSettings
    from lofihippseg.recipe.quality_data import QualityData, plan, read_case

    spec = json.loads((work / "held" / "data.json").read_text())
    data = QualityData(**{**spec, "maps": Path(spec["maps"])})
    model = load_model(DEFAULT_MODEL)
    runs = {
        "predict": PredictSettings(device="cpu", threads=1),
        "t1 pair": PredictSettings(device="cpu", threads=1, family="t1"),
        "1.25 mm grid": PredictSettings(device="cpu", threads=1, grid="1.25"),
    }
    predictors = {k: Predictor(model, s) for k, s in runs.items()}
    done = {json.loads(x)["case"] for x in out.read_text().splitlines()} if out.is_file() else set()
    generators: dict = {}
    for case in plan(data):
        if case["kind"] != "head" or case["case"] in done:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            _, volume, truth = read_case(case, data, generators, Path(tmp))
            labels, seconds = {}, {}
            for name, predictor in predictors.items():
                t = time.perf_counter()
                labels[name] = predictor.predict_volume(volume).labels
                seconds[name] = round(time.perf_counter() - t, 2)
        record = {"case": case["case"], "seconds": seconds, "sides": {}}
        for v, side in ((1, "left"), (2, "right")):
            own = labels["predict"] == v
            record["sides"][side] = {"dice": mask_dice(own, truth == v)} | {
                name: mask_dice(own, labels[name] == v) for name in runs if name != "predict"
            }
        with open(out, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(case["case"], seconds, flush=True)
    _show_second_opinion(work, out)


def _show_second_opinion(work: Path, out: Path) -> None:
    held = {(r["case"], r["side"]): r for r in load_rows(work / "held")}
    records = [json.loads(x) for x in out.read_text().splitlines()]
    keys = [(r["case"], s) for r in records for s in r["sides"] if (r["case"], s) in held]
    opinions = {(r["case"], s): v for r in records for s, v in r["sides"].items()}
    dice = np.array([held[k]["dice"] for k in keys])
    shipped = shipped_predictions([held[k] for k in keys])
    print(f"held-back heads: {len(records)} ({len(keys)} sides, {(dice < LOW).sum()} under 0.6)")
    show("shipped estimator", shipped, dice)
    for name in ("t1 pair", "1.25 mm grid"):
        agreement = np.array([opinions[k][name] for k in keys])
        cost = np.median([r["seconds"][name] for r in records])
        show(f"{name}: Dice with predict's ({cost:.1f} s/head)", agreement, dice)
        show(f"{name} + estimator (mean of ranks)", ranks(agreement) + ranks(shipped), dice)


def _cube(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each found side's four channels in a ``CUBE`` mm cube around it (the left mirrored)."""
    labels, spacing = arrays["labels"], np.asarray(arrays["spacing"], float)
    box = tuple(slice(int(a), int(b)) for a, b in arrays["box"])

    def window(name: str) -> np.ndarray:
        full = np.zeros((2, *labels.shape), np.float32)
        full[(slice(None), *box)] = arrays[name]
        return full

    fused, view1, view2 = window("fused"), window("prob1"), window("prob2")
    grid = np.stack(np.meshgrid(*[np.arange(CUBE) - CUBE / 2 + 0.5] * 3, indexing="ij"))
    out = {}
    for v, side in ((1, "left"), (2, "right")):
        mask = labels == v
        if mask.sum() < 10:
            continue
        offsets = grid.copy()
        if v == 1:
            offsets[0] = -offsets[0]
        centre = np.argwhere(mask).mean(0) * spacing
        coords = (offsets + centre[:, None, None, None]) / spacing[:, None, None, None]

        def sample(a: np.ndarray, coords: np.ndarray = coords) -> np.ndarray:
            return ndimage.map_coordinates(a, coords, order=1, mode="constant")

        image = sample(arrays["image"].astype(np.float32))
        image = (image - image.mean()) / (image.std() + 1e-6)
        diff = np.abs(sample(view1[v - 1]) - sample(view2[v - 1]))
        out[side] = np.stack(
            [image, sample(mask.astype(np.float32)), sample(fused[v - 1]), diff]
        ).astype(np.float32)
    return out


def _cubes(folder: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    rows = {(r["case"], r["side"]): r for r in load_rows(folder)}
    x, kept = [], []
    for case, arrays in iter_saved(folder):
        for side, cube in _cube(arrays).items():
            if (case, side) in rows:
                x.append(cube)
                kept.append(rows[(case, side)])
    return np.stack(x), np.array([r["dice"] for r in kept], np.float32), kept


def _network() -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for cin, cout in ((4, 8), (8, 16), (16, 32)):
        layers += [torch.nn.Conv3d(cin, cout, 3, padding=1), torch.nn.GroupNorm(4, cout)]
        layers += [torch.nn.ReLU(), torch.nn.MaxPool3d(2)]
    layers += [torch.nn.Conv3d(32, 32, 3, padding=1), torch.nn.ReLU()]
    layers += [torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Dropout(0.3)]
    return torch.nn.Sequential(*layers, torch.nn.Linear(32, 1))


def run_image_network(work: Path, epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xt, yt, _ = _cubes(work / "train")
    xh, yh, held = _cubes(work / "held")
    print(f"cubes: {len(yt)} training sides, {len(yh)} held back")
    net = _network()
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    t = time.perf_counter()
    for _ in range(epochs):
        net.train()
        order = rng.permutation(len(yt))
        for start in range(0, len(yt), 16):
            idx = order[start : start + 16]
            batch = xt[idx].copy()
            for b in batch:  # shifts of up to 3 mm, contrast and noise on the scan
                b[:] = np.roll(b, tuple(rng.integers(-3, 4, 3)), axis=(1, 2, 3))
                b[0] = b[0] * rng.uniform(0.8, 1.2) + rng.normal(0, 0.1, b[0].shape)
            pred = torch.sigmoid(net(torch.from_numpy(batch))[:, 0])
            loss = torch.nn.functional.smooth_l1_loss(pred, torch.from_numpy(yt[idx]), beta=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
    net.eval()
    with torch.no_grad():
        pred = torch.sigmoid(net(torch.from_numpy(xh))[:, 0]).numpy()
    print(f"trained {epochs} epochs in {time.perf_counter() - t:.0f} s")
    shipped = shipped_predictions(held)
    show("shipped estimator", shipped, yh)
    show("image network", pred, yh)
    show("image network + estimator (mean)", (pred + shipped) / 2, yh)


def run_learning_curve(work: Path) -> None:
    from lofihippseg.recipe.quality_fit import FitSettings, fit_rows, validate

    rows, held = load_rows(work / "train"), load_rows(work / "held")
    cases = sorted({r["case"] for r in rows})
    print(f"held back: {len(held)} sides; training table: {len(cases)} cases, {len(rows)} sides")
    for share in (1 / 3, 1 / 2, 3 / 4, 1.0):
        got = []
        for seed in range(3):
            keep = set(np.random.default_rng(seed).choice(cases, round(share * len(cases)), False))
            est, _ = fit_rows([r for r in rows if r["case"] in keep], FitSettings(), seed)
            f = validate(est, held)["all"]
            got.append([f["spearman"], f["auc_below_0.6"], f["catch_rate"], f["false_flag_rate"]])
        m = np.mean(got, axis=0)
        print(
            f"  {share:4.0%} of the cases: Spearman {m[0]:.3f}  AUC(<0.6) {m[1]:.3f}  "
            f"catch {m[2]:.1%}  false flags {m[3]:.1%} (the fit's own threshold; mean of 3)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "what", choices=["features", "second-opinion", "image-network", "learning-curve"]
    )
    ap.add_argument("--work", type=Path, default=Path("runs/quality3"), help="the tables' folder")
    ap.add_argument("--out", type=Path, default=None, help="second-opinion: its table (resumed)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.what == "features":
        run_features(a.work)
    elif a.what == "learning-curve":
        run_learning_curve(a.work)
    elif a.what == "second-opinion":
        run_second_opinion(a.work, a.out or a.work / "second_opinion.jsonl")
    else:
        run_image_network(a.work, a.epochs, a.seed)


if __name__ == "__main__":
    main()
