"""Fit (and validate) the quality estimator of one model bundle: rerunnable, one command.

1. Build the training table (``recipe.quality_data``): the model predicts synthetic heads of maps
   01-13 under every contrast the generator makes, degraded ones, and the MSD training crops;
   each side's features beside its true Dice (resumable: ``WORK/train/table.jsonl``).
2. Fit small gradient-boosted regression trees (numpy, squared error on Dice) on a few
   features (``SELECTED``) and, on 5-fold out-of-fold predictions with a label map's heads
   kept in one fold (so they are of anatomy the trees never saw, like the held-back maps), an
   isotonic calibration (medians: least absolute error) and the review threshold (the lowest
   threshold whose out-of-fold catch of sides under 0.6 reaches ``catch``).
3. Optionally build the held-back table (maps 14-16, the MSD test crops: ``WORK/held``) and
   record the estimator's figures on it in the file's ``meta``.
4. Write ``MODEL.quality.json`` beside the bundle with the bundle's sha256.

Example:
    OMP_NUM_THREADS=1 python -m lofihippseg.recipe.quality_fit \\
        --maps ../shared/data/synthseg_label_maps --msd ../shared/data/msd_hippocampus \\
        --work runs/quality --n-heads 300 --n-held 150
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lofihippseg import __version__
from lofihippseg.errors import LoFiError
from lofihippseg.quality.estimator import QualityEstimator, Trees, estimator_path, file_sha256
from lofihippseg.quality.features import FEATURES, as_vector
from lofihippseg.recipe.quality_data import QualityData, build_table, iter_saved, read_table

log = logging.getLogger(__name__)

LOW, GOOD = 0.6, 0.7  # sides under LOW should be caught; sides at or above GOOD not flagged
# The trees' inputs: chosen from ``FEATURES`` by forward selection on the training table alone
# (runs/quality3, 2026-12-06: each step adds the feature that most raises Spearman + AUC(< 0.6)
# - 2 x MAE of out-of-fold predictions with folds grouped by label map; stopped when a step
# gained under 0.002). All 25 generalised worse to unseen anatomy (out of fold by map: Spearman
# 0.871, AUC 0.908, MAE 0.068; these five: 0.887, 0.929, 0.066).
SELECTED = ("mean_prob_in", "max_voxel_mm", "cv_inside", "view_mad", "anisotropy")


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Hyper-parameters of the trees and the review threshold.

    Attributes:
        n_trees: boosting rounds.
        depth: levels of splits per tree.
        learning_rate: shrinkage of each tree.
        subsample: share of rows each tree sees.
        min_leaf: fewest rows in a leaf.
        bins: candidate thresholds per feature (quantiles).
        folds: out-of-fold folds for the calibration and the threshold.
        group_by: what a fold keeps together: ``map`` (a synthetic head's label map, so that
            the out-of-fold predictions are of anatomy the trees never saw, as the held-back
            maps 14-16 are; crops and rows without ``map_index`` by case) or ``case``.
        catch: out-of-fold share of sides under 0.6 the review threshold must catch.
        features: the inputs (names of ``quality.features.FEATURES``; ``SELECTED``).
    """

    n_trees: int = 80
    depth: int = 3
    learning_rate: float = 0.05
    subsample: float = 0.8
    min_leaf: int = 8
    bins: int = 32
    folds: int = 5
    catch: float = 0.90
    features: tuple[str, ...] = SELECTED
    group_by: str = "map"


def _edges(x: np.ndarray, bins: int) -> list[np.ndarray]:
    """Candidate thresholds per feature: distinct inner quantiles."""
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    return [np.unique(np.quantile(x[:, j], qs)) for j in range(x.shape[1])]


def _tree(
    x: np.ndarray,
    binned: np.ndarray,
    edges: list[np.ndarray],
    residual: np.ndarray,
    rows: np.ndarray,
    s: FitSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One complete tree of depth ``s.depth`` on ``rows``: (features, thresholds, leaves)."""
    n_inner = 2**s.depth - 1
    feats = np.zeros(n_inner, np.int64)
    thr = np.full(n_inner, np.inf)  # no split: everything goes left
    members = {0: rows}
    for node in range(n_inner):
        idx = members.pop(node)
        best = (0.0, 0, np.inf)
        if len(idx) >= 2 * s.min_leaf:
            r = residual[idx]
            total, count = r.sum(), len(idx)
            for j, e in enumerate(edges):
                if len(e) == 0:
                    continue
                b = binned[idx, j]
                sums = np.cumsum(np.bincount(b, weights=r, minlength=len(e) + 1))[:-1]
                counts = np.cumsum(np.bincount(b, minlength=len(e) + 1))[:-1]
                ok = (counts >= s.min_leaf) & (count - counts >= s.min_leaf)
                if not ok.any():
                    continue
                right = count - counts
                gain = np.where(
                    ok,
                    sums**2 / np.maximum(counts, 1) + (total - sums) ** 2 / np.maximum(right, 1),
                    -np.inf,
                )
                k = int(np.argmax(gain))
                gain_k = gain[k] - total**2 / count
                if gain_k > best[0] + 1e-12:
                    best = (float(gain_k), j, float(e[k]))
        feats[node], thr[node] = best[1], best[2]
        go_right = x[idx, best[1]] > best[2]
        members[2 * node + 1] = idx[~go_right]
        members[2 * node + 2] = idx[go_right]
    leaves = np.zeros(2**s.depth)  # an empty leaf (no split above it) adds nothing
    for leaf in range(2**s.depth):
        idx = members[n_inner + leaf]
        if len(idx):
            leaves[leaf] = s.learning_rate * float(residual[idx].mean())
    return feats, thr, np.round(leaves, 6)  # short in JSON, and exactly what is stored


def fit_trees(x: np.ndarray, y: np.ndarray, s: FitSettings, seed: int = 0) -> Trees:
    """Gradient-boosted regression trees (squared error) on rows ``x`` and targets ``y``.

    Example:
        >>> rng = np.random.default_rng(0); x = rng.random((200, 2)); y = (x[:, 0] > 0.5) * 1.0
        >>> t = fit_trees(x, y, FitSettings(n_trees=30, depth=1, learning_rate=0.3))
        >>> bool(abs(t.predict(np.array([[0.9, 0.1]]))[0] - 1) < 0.05)
        True
    """
    x = np.asarray(x, np.float64)
    rng = np.random.default_rng(seed)
    edges = _edges(x, s.bins)
    # bin b holds values <= edges[b] (and > edges[b-1]): a split at edge k = bins 0..k left
    binned = np.stack([np.searchsorted(e, x[:, j]) for j, e in enumerate(edges)], axis=1)
    base = round(float(y.mean()), 6)
    pred = np.full(len(y), base)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for _ in range(s.n_trees):
        rows = np.nonzero(rng.random(len(y)) < s.subsample)[0]
        tree = _tree(x, binned, edges, y - pred, rows, s)
        out.append(tree)
        pred += Trees(s.depth, 0.0, *(a[None] for a in tree)).predict(x)
    return Trees(
        s.depth,
        base,
        np.stack([t[0] for t in out]),
        np.stack([t[1] for t in out]),
        np.stack([t[2] for t in out]),
    )


def isotonic(x: np.ndarray, y: np.ndarray, knots: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A monotone (non-decreasing) curve y(x) by pool-adjacent-violators on medians (the
    monotone curve of least absolute error: the figure the issue asks of the estimate), as
    ``knots`` points.

    Each pooled block becomes one point (its mean x, its median y) and the curve runs straight
    between them, so it rises wherever the blocks do: no wide flat steps, which would give many
    sides the same calibrated value and make the review threshold flag them all or none. A few
    sides far below their neighbours (a label map whose outline convention the model does not
    share) do not pull the curve down as a mean would.

    Example:
        >>> cx, cy = isotonic(np.array([0.0, 1, 2, 3]), np.array([0.0, 2, 1, 3]), knots=4)
        >>> cy.tolist()  # the pooled pair (x 1 and 2, y 2 and 1) is the point (1.5, 1.5)
        [0.0, 1.0, 2.0, 3.0]
        >>> isotonic(np.array([0.0, 1, 2]), np.array([0.9, 0.8, 0.1]), knots=3)[1].tolist()
        [0.8, 0.8, 0.8]
    """
    order = np.argsort(x, kind="stable")
    xs, ys = np.asarray(x, np.float64)[order], np.asarray(y, np.float64)[order]
    blocks: list[tuple[list[float], float]] = []  # (the block's y values, the sum of its x)
    for vx, vy in zip(xs, ys, strict=True):
        blocks.append(([float(vy)], float(vx)))
        while len(blocks) > 1 and np.median(blocks[-2][0]) > np.median(blocks[-1][0]):
            top_y, top_x = blocks.pop()
            blocks[-1][0].extend(top_y)
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + top_x)
    bx = np.array([sx / len(by) for by, sx in blocks])
    by = np.array([float(np.median(b)) for b, _ in blocks])
    qs = np.unique(np.quantile(xs, np.linspace(0, 1, knots)))
    return qs, np.interp(qs, bx, by)


def review_threshold(pred: np.ndarray, dice: np.ndarray, catch: float) -> float:
    """The lowest threshold (predicted Dice) that flags ``catch`` of the sides under 0.6: just
    above the ``catch`` quantile of their predictions (0.6 when there are none)."""
    low = np.sort(pred[dice < LOW])
    if len(low) == 0:
        return LOW
    k = min(int(np.ceil(catch * len(low))) - 1, len(low) - 1)
    return float(low[max(k, 0)]) + 1e-4


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann-Whitney; NaN if one class).

    Example:
        >>> auc(np.array([0.9, 0.8, 0.2]), np.array([True, True, False]))
        1.0
    """
    pos, neg = score[positive], score[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def figures(pred: np.ndarray, dice: np.ndarray, flags: np.ndarray | None = None) -> dict[str, Any]:
    """Spearman, MAE, AUC for Dice < 0.6 (low prediction = positive), and with ``flags``
    the catch rate (flagged among Dice < 0.6) and false-flag rate (flagged among >= 0.7)."""
    low, good = dice < LOW, dice >= GOOD
    out: dict[str, Any] = {
        "n": int(len(dice)),
        "n_below_0.6": int(low.sum()),
        "spearman": float(stats.spearmanr(pred, dice)[0]) if len(dice) > 2 else float("nan"),
        "mae": float(np.abs(pred - dice).mean()) if len(dice) else float("nan"),
        "auc_below_0.6": auc(-pred, low),
    }
    if flags is not None:
        out["catch_rate"] = float(flags[low].mean()) if low.any() else float("nan")
        out["false_flag_rate"] = float(flags[good].mean()) if good.any() else float("nan")
    return out


def reliability(pred: np.ndarray, dice: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted against mean true Dice by decile of the prediction."""
    order = np.argsort(pred, kind="stable")
    rows = []
    for part in np.array_split(order, n_bins):
        if len(part):
            rows.append(
                {
                    "n": int(len(part)),
                    "predicted_from": float(pred[part].min()),
                    "predicted_to": float(pred[part].max()),
                    "mean_predicted": float(pred[part].mean()),
                    "mean_true": float(dice[part].mean()),
                }
            )
    return rows


def load_rows(folder: Path, recompute: bool = False) -> list[dict[str, Any]]:
    """A table's rows; with ``recompute`` the features are computed again from the saved
    cases (after ``quality.features`` changed) where a case was saved. A side with no
    hippocampus in the truth nor in the prediction (a field of view cut above it) has no Dice
    and is left out."""
    rows = [
        r
        for r in read_table(Path(folder) / "table.jsonl")
        if not (r["dice"] == 1.0 and r["vol_ml"] == 0)
    ]
    if not recompute:
        return rows
    from lofihippseg.recipe.quality_data import saved_features

    fresh = {case: saved_features(arrays) for case, arrays in iter_saved(Path(folder))}
    for row in rows:
        if row["case"] in fresh:
            row.update(fresh[row["case"]][row["side"]])
    return rows


def matrix(rows: Sequence[dict[str, Any]], names: Sequence[str] = FEATURES) -> np.ndarray:
    """Rows' features as an (n, features) array."""
    return np.stack([as_vector(r, names) for r in rows]) if rows else np.zeros((0, len(names)))


def fold_numbers(
    rows: Sequence[dict[str, Any]], folds: int, group_by: str = "map", seed: int = 0
) -> np.ndarray:
    """Each row's fold: its group's (``FitSettings.group_by``), groups spread at random.

    Example:
        >>> rows = [{"case": f"c{i}", "kind": "head", "map_index": i % 2} for i in range(6)]
        >>> f = fold_numbers(rows, 2)
        >>> bool((f[::2] == f[0]).all() and (f[1::2] != f[0]).all())
        True
    """
    if group_by not in ("map", "case"):
        raise LoFiError(f"group_by must be 'map' or 'case', got {group_by!r}")

    def group(r: dict[str, Any]) -> str:
        if group_by == "map" and r.get("kind") == "head" and "map_index" in r:
            return f"map {int(r['map_index'])}"
        return f"case {r['case']}"

    groups = [group(r) for r in rows]
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for kind in ("map", "case"):  # maps and cases dealt out in turn, each evenly
        names = sorted({g for g in groups if g.startswith(kind)})
        order = rng.permutation(len(names)) % folds
        fold_of.update(zip(names, (int(k) for k in order), strict=True))
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def fit_rows(
    rows: Sequence[dict[str, Any]], s: FitSettings | None = None, seed: int = 0
) -> tuple[QualityEstimator, np.ndarray]:
    """Fit the estimator on table rows; returns it and its out-of-fold predictions."""
    s = s or FitSettings()
    if len(rows) < 4 * s.folds:
        raise LoFiError(f"only {len(rows)} sides to fit the quality estimator on; build more")
    x, y = matrix(rows, s.features), np.array([float(r["dice"]) for r in rows])
    fold = fold_numbers(rows, s.folds, s.group_by, seed)
    oof = np.zeros(len(y))
    for k in range(s.folds):
        held = fold == k
        trees = fit_trees(x[~held], y[~held], s, seed + k + 1)
        oof[held] = trees.predict(x[held])
    cx, cy = isotonic(oof, y)
    calibrated = np.clip(np.interp(oof, cx, cy), 0, 1)
    threshold = review_threshold(calibrated, y, s.catch)
    trees = fit_trees(x, y, s, seed)
    est = QualityEstimator(tuple(s.features), trees, cx, cy, threshold)
    oof_figures = figures(calibrated, y, calibrated < threshold)
    est.meta["out_of_fold"] = {k: _round(v) for k, v in oof_figures.items()}
    fit = {k: v for k, v in dataclasses.asdict(s).items() if k != "features"}
    est.meta["fit"] = {**fit, "seed": seed, "n_sides": len(rows)}
    return est, calibrated


def fit_quality_estimator(
    bundle_path: str | Path,
    out_path: str | Path | None,
    data_spec: QualityData,
    seed: int = 0,
    work_dir: str | Path = "runs/quality",
    validation: QualityData | None = None,
    settings: FitSettings | None = None,
    threads: int = 1,
    recompute: bool = False,
    build: bool = True,
) -> QualityEstimator:
    """Build the tables, fit, validate and write the estimator of one model bundle.

    The model recipe's stage (``make model``) calls this after the bundle is written.

    Args:
        bundle_path: the model bundle (``.pt``) the estimator is for.
        out_path: where to write it (None: ``MODEL.quality.json`` beside the bundle).
        data_spec: the training scans (label maps 01-13, MSD training crops).
        seed: seed of the fit (the scans' seed is ``data_spec.seed``).
        work_dir: the tables' folder (``train/``, ``held/``); resumed when present.
        validation: held-back scans (maps 14-16, MSD test crops) to record figures on.
        settings: the trees' hyper-parameters (default ``FitSettings()``).
        threads: CPU threads for predict.
        recompute: compute the features again from the saved cases, after
            ``quality.features`` changed (the tables' rows keep those of the code that built
            them, from the maps as predict had them; the saved maps are float16, so recomputed
            features differ from predict's a little).
        build: predict the cases missing from the tables first (False: fit on the tables as
            they are, e.g. a build cut short).

    Returns:
        The estimator (written to ``out_path``).
    """
    import torch

    from lofihippseg.inference.model_loading import load_model
    from lofihippseg.inference.predictor import Predictor
    from lofihippseg.inference.settings import PredictSettings

    if data_spec.anatomy != "train":
        raise LoFiError("the estimator trains on maps 01-13 only (data_spec.anatomy='train')")
    torch.set_num_threads(threads)
    bundle = Path(bundle_path)
    work = Path(work_dir)
    if build:
        settings_p = PredictSettings(device="cpu", threads=threads)
        predictor = Predictor(load_model(bundle), settings_p)
        t = time.perf_counter()
        build_table(predictor, data_spec, work / "train")
        if validation is not None:
            build_table(predictor, validation, work / "held")
        log.info("tables built in %.0f s", time.perf_counter() - t)
    est, _ = fit_rows(load_rows(work / "train", recompute), settings or FitSettings(), seed)
    est.bundle_sha256 = file_sha256(bundle)
    est.meta["bundle"] = bundle.name
    est.meta["tool_version"] = __version__  # predict's code: refit when it changes
    est.meta["trained_on"] = _plain(data_spec)
    if validation is not None:
        est.meta["held_back_data"] = _plain(validation)
    if validation is not None:
        est.meta["held_back"] = validate(est, load_rows(work / "held", recompute))
    est.save(Path(out_path) if out_path else estimator_path(bundle))
    return est


def _plain(data: QualityData) -> dict[str, Any]:
    """A data spec as JSON values (paths as strings)."""
    return json.loads(json.dumps(dataclasses.asdict(data), default=str))


def validate(est: QualityEstimator, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The estimator's figures on held-back rows (all, heads, crops)."""
    out: dict[str, Any] = {}
    for name, keep in (
        ("all", lambda r: True),
        ("heads", lambda r: r["kind"] == "head"),
        ("crops", lambda r: r["kind"] == "crop"),
    ):
        part = [r for r in rows if keep(r)]
        if part:
            pred = est.predict_rows(matrix(part, est.features))
            dice = np.array([r["dice"] for r in part])
            out[name] = figures(pred, dice, pred < est.review_below)
    return {k: {m: _round(v) for m, v in d.items()} for k, d in out.items()}


def _round(v: Any) -> Any:
    """4 decimals; NaN (a figure without its cases, e.g. no side under 0.6) as None (JSON)."""
    if isinstance(v, float):
        return None if v != v else round(v, 4)
    return v


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the tables, fit, validate, write the estimator."""
    from lofihippseg.inference.model_loading import DEFAULT_MODEL

    p = argparse.ArgumentParser(
        prog="python -m lofihippseg.recipe.quality_fit", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model bundle (.pt)")
    p.add_argument("--out", type=Path, default=None, help="default: MODEL.quality.json")
    p.add_argument("--maps", type=Path, required=True, help="folder of training_seg_NN.nii.gz")
    p.add_argument("--msd", type=Path, default=None, help="MSD Task04 folder (imagesTr/...)")
    p.add_argument("--work", type=Path, default=Path("runs/quality"), help="tables' folder")
    p.add_argument("--n-heads", type=int, default=300, help="synthetic training heads")
    p.add_argument("--n-held", type=int, default=150, help="held-back heads (0: none)")
    p.add_argument("--p-degraded", type=float, default=0.5, help="share of degraded heads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--fit-only", action="store_true", help="fit on the tables as they are (no predicting)"
    )
    p.add_argument("--recompute", action="store_true", help="features again from the saved cases")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train = QualityData(a.maps, "train", a.n_heads, a.p_degraded, msd=a.msd, seed=a.seed)
    held = None
    if a.n_held > 0:
        held = QualityData(
            a.maps, "held", a.n_held, a.p_degraded, msd=a.msd, msd_split="test", seed=a.seed + 1
        )
    try:
        est = fit_quality_estimator(
            a.model, a.out, train, a.seed, a.work, held, threads=a.threads,
            recompute=a.recompute, build=not a.fit_only,
        )  # fmt: skip
    except LoFiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"fitted on {est.meta['fit']['n_sides']} sides; out of fold: {est.meta['out_of_fold']}")
    if "held_back" in est.meta:
        print(f"held back: {est.meta['held_back']}")
    print(f"review below {est.review_below:.3f}; written {a.out or estimator_path(a.model)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
