"""The fitted quality estimator: per-side predicted Dice from ``quality.features``.

Stored as plain numbers in JSON beside the model bundle it was fitted for
(``MODEL.quality.json`` next to ``MODEL.pt``), never pickled: small gradient-boosted regression
trees (complete binary trees of fixed depth: each internal node a feature index and a threshold,
``x > threshold`` goes right) whose summed output is mapped through an isotonic calibration
(a monotone piecewise-linear curve fitted on out-of-fold predictions). The file records the
sha256 of the bundle: an estimator is used only for the exact bundle it was fitted on, so a
model without one (e.g. a user's own ``train`` run) gets no number (``predicted_dice: null``),
only the rules of ``reporting.status``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lofihippseg.errors import LoFiError
from lofihippseg.io.atomic import atomic_path
from lofihippseg.quality.features import as_vector

log = logging.getLogger(__name__)

FORMAT = "lofihippseg-quality/1"
SUFFIX = ".quality.json"
NO_ESTIMATOR = "no estimator"
NO_SPLIT = 1e308  # a node that does not split: every value goes left (JSON has no infinity)


@dataclass
class Trees:
    """Gradient-boosted regression trees, complete binary trees of one depth.

    Attributes:
        depth: levels of splits in every tree.
        base: the starting value (the training mean).
        features: (trees, 2**depth - 1) feature index of each internal node (breadth first).
        thresholds: (trees, 2**depth - 1) its threshold (``x > t`` goes right).
        leaves: (trees, 2**depth) leaf values (learning rate included).
    """

    depth: int
    base: float
    features: np.ndarray
    thresholds: np.ndarray
    leaves: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs for rows ``x`` (n, n_features).

        Example:
            >>> t = Trees(1, 0.5, np.array([[0]]), np.array([[0.0]]), np.array([[-0.1, 0.1]]))
            >>> t.predict(np.array([[-1.0], [1.0]])).round(2).tolist()
            [0.4, 0.6]
        """
        x = np.atleast_2d(np.asarray(x, np.float64))
        out = np.full(len(x), self.base)
        rows = np.arange(len(x))
        for f, t, leaf in zip(self.features, self.thresholds, self.leaves, strict=True):
            node = np.zeros(len(x), np.int64)
            for _ in range(self.depth):
                go_right = x[rows, f[node]] > t[node]
                node = 2 * node + 1 + go_right
            out += leaf[node - (2**self.depth - 1)]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON."""
        return {
            "kind": "gbt",
            "depth": self.depth,
            "base": round(float(self.base), 6),
            "features": self.features.astype(int).tolist(),
            # thresholds exact: a feature value often equals one (quantiles of the table)
            "thresholds": [
                [float(v) if v < NO_SPLIT else NO_SPLIT for v in r] for r in self.thresholds
            ],
            "leaves": [[float(v) for v in row] for row in self.leaves],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trees:
        """Read back :meth:`to_dict`."""
        depth = int(d["depth"])
        features = np.asarray(d["features"], np.int64).reshape(-1, 2**depth - 1)
        thresholds = np.asarray(d["thresholds"], np.float64).reshape(features.shape)
        leaves = np.asarray(d["leaves"], np.float64).reshape(len(features), 2**depth)
        return cls(depth, float(d["base"]), features, thresholds, leaves)


@dataclass
class QualityEstimator:
    """Per-side predicted Dice and the review threshold, for one model bundle.

    Attributes:
        features: names of the inputs, in order (``quality.features.FEATURES``).
        trees: the regression trees (raw Dice).
        calibration_x: knots of the calibration curve (raw output, increasing).
        calibration_y: calibrated Dice at the knots (non-decreasing).
        review_below: a side whose predicted Dice is below this goes to review.
        bundle_sha256: the model bundle it was fitted for.
        meta: how it was fitted and validated (data, figures), for the record.
    """

    features: tuple[str, ...]
    trees: Trees
    calibration_x: np.ndarray
    calibration_y: np.ndarray
    review_below: float
    bundle_sha256: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def predict_rows(self, x: np.ndarray) -> np.ndarray:
        """Calibrated Dice (clipped to 0-1) for feature rows ``x``."""
        raw = self.trees.predict(x)
        if len(self.calibration_x) >= 2:
            raw = np.interp(raw, self.calibration_x, self.calibration_y)
        return np.clip(raw, 0.0, 1.0)

    def predict(self, side_features: Mapping[str, float]) -> float:
        """Predicted Dice of one side from its features (``quality.features``)."""
        return float(self.predict_rows(as_vector(side_features, self.features)[None])[0])

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (plain numbers)."""
        return {
            "format": FORMAT,
            "bundle_sha256": self.bundle_sha256,
            "features": list(self.features),
            "model": self.trees.to_dict(),
            "calibration": {
                "x": [round(float(v), 5) for v in self.calibration_x],
                "y": [round(float(v), 5) for v in self.calibration_y],
            },
            "review_below": round(float(self.review_below), 4),
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write the JSON file atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QualityEstimator:
        """Read back :meth:`to_dict` (raises ``LoFiError`` on another format)."""
        if d.get("format") != FORMAT:
            raise LoFiError(f"not a quality estimator of format {FORMAT} ({d.get('format')!r})")
        cal = d.get("calibration") or {}
        return cls(
            features=tuple(d["features"]),
            trees=Trees.from_dict(d["model"]),
            calibration_x=np.asarray(cal.get("x", []), np.float64),
            calibration_y=np.asarray(cal.get("y", []), np.float64),
            review_below=float(d["review_below"]),
            bundle_sha256=str(d.get("bundle_sha256", "")),
            meta=dict(d.get("meta") or {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> QualityEstimator:
        """Read an estimator file; a clear one-line ``LoFiError`` when it cannot be used."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, LoFiError) as exc:
            raise LoFiError(f"{path}: unreadable quality estimator ({exc})") from None


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (cached per path, size and modification time)."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def estimator_path(bundle: str | Path) -> Path:
    """Where a bundle's estimator lies: ``MODEL.quality.json`` beside ``MODEL.pt``.

    Example:
        >>> estimator_path("models/lofihippseg_default.pt").name
        'lofihippseg_default.quality.json'
    """
    bundle = Path(bundle)
    return bundle.with_name(bundle.stem + SUFFIX)


def find_estimator(model_source: str | Path | None) -> tuple[QualityEstimator | None, str]:
    """The estimator fitted for the model file ``model_source``, or None and why not.

    Returns:
        (estimator, note): the note names the file used, or says why there is none (no file
        beside the model, fitted for another bundle, unreadable).
    """
    if model_source is None or not Path(str(model_source)).is_file():
        return None, f"{NO_ESTIMATOR}: the model is not a single bundle file"
    bundle = Path(str(model_source))
    path = estimator_path(bundle)
    if not path.is_file():
        return None, f"{NO_ESTIMATOR}: none fitted for {bundle.name} ({path.name} absent)"
    try:
        est = QualityEstimator.load(path)
    except LoFiError as exc:
        log.warning("%s", exc)
        return None, f"{NO_ESTIMATOR}: {exc}"
    if est.bundle_sha256 != file_sha256(bundle):
        return None, f"{NO_ESTIMATOR}: {path.name} was fitted for another version of {bundle.name}"
    return est, str(path.name)


def round_or_none(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded, or None when it is None or not finite."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), digits)


def predicted_dice(
    estimator: QualityEstimator | None, features: Mapping[str, Mapping[str, float]]
) -> dict[str, float | None]:
    """Per-side predicted Dice (None without an estimator)."""
    sides: Sequence[str] = ("left", "right")
    if estimator is None:
        return dict.fromkeys(sides)
    return {s: round_or_none(estimator.predict(features[s])) for s in sides}
