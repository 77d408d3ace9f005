"""One quality status per segmented case, so a cohort table can be sorted by it.

A case is given the first status of this list whose rule it meets (the order is by severity);
``flags`` keeps every rule met, ``reason`` says why in words:

- ``implausible_input``: the scan cannot be a usable head scan for this tool: a field of view
  under 60 mm or over 320 mm along an axis, a voxel side over 5 mm, or voxels more than 4 times
  longer along one axis than along another (e.g. 1 x 1 x 7 mm).
- ``empty``: the left or the right hippocampus (or both) was not found.
- ``implausible_volume``: a side's volume is outside 0.5-8.0 mL. Adult hippocampi measure about
  2.5-5 mL each, a term newborn's about 1 mL, so this range holds from infancy on.
- ``asymmetric``: one side's volume is more than twice the other's (an asymmetry index beyond
  +-0.67); real hippocampi differ by far less, so one of the two outlines is wrong.
- ``low_agreement``: the two views' segmentations agree with a Dice below 0.5 (look at it).
- ``ok``: none of these.

A case that could not be segmented at all is ``failed`` (written by ``predict``, not here).

:func:`side_review_reasons` applies the same rules per side, for the sidecar's ``quality``
block (``quality.assess``): a side goes to review when it is empty, outside the plausible range,
more than twice the other side or under half of it (both sides: either outline may be the
wrong one), or when the scan itself is implausible.

A **crop** (a scan ``predict`` ran as one: narrower than ``CROP_MAX_WIDTH_MM`` from left to
right, so it cannot hold both hippocampi, e.g. the MSD crops; ``Prediction.info["crop"]``,
measured under every family rule) holds one hippocampus, under either label: its small field
of view is not a problem (down to ``StatusRules.min_crop_fov_mm``),
the side it does not hold is not ``empty`` (:func:`absent_side`; nothing is estimated for it),
there is no asymmetry to judge, and the plausible range applies to the one hippocampus (both
labels together). A second label in a crop is flagged for review.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

OK = "ok"
EMPTY = "empty"
IMPLAUSIBLE_VOLUME = "implausible_volume"
LOW_AGREEMENT = "low_agreement"
IMPLAUSIBLE_INPUT = "implausible_input"
ASYMMETRIC = "asymmetric"
FAILED = "failed"
# most severe first: the status of a case is the first one whose rule it meets
SEVERITY = (IMPLAUSIBLE_INPUT, EMPTY, IMPLAUSIBLE_VOLUME, ASYMMETRIC, LOW_AGREEMENT)
STATUSES = (OK, *SEVERITY, FAILED)


@dataclass(frozen=True)
class StatusRules:
    """The thresholds of :func:`case_status` (README, "Quality status").

    Attributes:
        min_fov_mm: smallest field of view along any axis (both hippocampi must fit).
        min_crop_fov_mm: smallest field of view of a crop along any axis (one hippocampus,
            about 40 x 15 x 20 mm, must fit; the MSD crops are 30 mm or more).
        max_fov_mm: largest field of view along any axis (larger is not a head scan).
        max_voxel_mm: largest voxel side.
        max_anisotropy: largest ratio of the longest to the shortest voxel side.
        min_side_ml: smallest plausible volume of one hippocampus.
        max_side_ml: largest plausible volume of one hippocampus.
        max_side_ratio: a side more than this many times the other is ``asymmetric``.
        min_view_dice: view-agreement Dice below this is ``low_agreement``.
    """

    min_fov_mm: float = 60.0
    min_crop_fov_mm: float = 25.0
    max_fov_mm: float = 320.0
    max_voxel_mm: float = 5.0
    max_anisotropy: float = 4.0
    min_side_ml: float = 0.5
    max_side_ml: float = 8.0
    max_side_ratio: float = 2.0
    min_view_dice: float = 0.5


@dataclass(frozen=True)
class CaseStatus:
    """The status of one case, every flag raised, and the reasons in words."""

    status: str
    flags: tuple[str, ...] = ()
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reason(self) -> str:
        """The reasons as one line (empty when ``ok``)."""
        return "; ".join(self.reasons)


def absent_side(left_ml: float, right_ml: float, crop: bool) -> str | None:
    """The side a crop does not hold (the label it has none of, when it has the other), else
    None (a head, or a crop with both labels or none).

    Example:
        >>> absent_side(0.0, 3.1, crop=True), absent_side(0.0, 3.1, crop=False)
        ('left', None)
    """
    if not crop or (left_ml > 0) == (right_ml > 0):
        return None
    return "left" if left_ml <= 0 else "right"


def input_problems(
    shape: Sequence[int],
    spacing: Sequence[float],
    rules: StatusRules = StatusRules(),
    crop: bool = False,
) -> list[str]:
    """Why a scan's geometry is implausible for this tool (empty list when it is fine).

    Example:
        >>> input_problems((5, 5, 5), (1.0, 1.0, 1.0))
        ['field of view 5 x 5 x 5 mm is under 60 mm along an axis']
        >>> input_problems((192, 192, 30), (1.0, 1.0, 7.0))
        ['voxels 1 x 1 x 7 mm are over 5 mm along an axis', 'voxels are 7.0 times longer along one axis than another (over 4)']
    """  # noqa: E501
    spacing = [float(s) for s in spacing]
    fov = [n * s for n, s in zip(shape, spacing, strict=True)]
    fov_text = " x ".join(f"{v:.0f}" for v in fov)
    vox_text = " x ".join(f"{v:.3g}" for v in spacing)
    problems = []
    smallest = rules.min_crop_fov_mm if crop else rules.min_fov_mm  # a crop is small by design
    if min(fov) < smallest:
        problems.append(f"field of view {fov_text} mm is under {smallest:.0f} mm along an axis")
    if max(fov) > rules.max_fov_mm:
        problems.append(
            f"field of view {fov_text} mm is over {rules.max_fov_mm:.0f} mm along an axis "
            "(not a head scan?)"
        )
    if max(spacing) > rules.max_voxel_mm:
        problems.append(f"voxels {vox_text} mm are over {rules.max_voxel_mm:g} mm along an axis")
    ratio = max(spacing) / min(spacing) if min(spacing) > 0 else math.inf
    if ratio > rules.max_anisotropy:
        problems.append(
            f"voxels are {ratio:.1f} times longer along one axis than another "
            f"(over {rules.max_anisotropy:g})"
        )
    return problems


def case_status(
    left_ml: float,
    right_ml: float,
    view_dice: float | None,
    shape: Sequence[int],
    spacing: Sequence[float],
    rules: StatusRules = StatusRules(),
    crop: bool = False,
) -> CaseStatus:
    """The quality status of one segmented case (rules in the module docstring).

    Args:
        left_ml: left hippocampus volume (mL).
        right_ml: right hippocampus volume (mL).
        view_dice: Dice agreement of the two views; None or NaN when both found nothing.
        shape: the scan's voxel grid.
        spacing: the scan's voxel sizes (mm).
        rules: the thresholds.
        crop: predict ran the scan as a crop around one hippocampus (module docstring).

    Example:
        >>> case_status(3.1, 3.3, 0.8, (160, 192, 176), (1.0, 1.0, 1.0)).status
        'ok'
        >>> s = case_status(0.0, 3.3, 0.7, (160, 192, 176), (1.0, 1.0, 1.0))
        >>> s.status, s.reason
        ('empty', 'left hippocampus not found')
    """
    found: dict[str, list[str]] = {name: [] for name in SEVERITY}
    found[IMPLAUSIBLE_INPUT] = input_problems(shape, spacing, rules, crop)
    if crop:  # one hippocampus, under either label: judged as one, no sides to compare
        sides: tuple[tuple[str, float], ...] = (("hippocampus", left_ml + right_ml),)
    else:
        sides = (("left", left_ml), ("right", right_ml))
    for side, ml in sides:
        if ml <= 0:
            found[EMPTY].append(f"{side} not found" if crop else f"{side} hippocampus not found")
        elif problem := _volume_problem(ml, rules):
            found[IMPLAUSIBLE_VOLUME].append(f"{side} {problem}")
    ratio = "" if crop else asymmetry_reason(left_ml, right_ml, rules)
    if ratio:
        found[ASYMMETRIC].append(ratio)
    if view_dice is not None and not math.isnan(view_dice) and view_dice < rules.min_view_dice:
        found[LOW_AGREEMENT].append(
            f"view agreement Dice {view_dice:.2f} below {rules.min_view_dice:g}"
        )
    flags = tuple(name for name in SEVERITY if found[name])
    reasons = tuple(r for name in SEVERITY for r in found[name])
    return CaseStatus(flags[0] if flags else OK, flags, reasons)


def asymmetry_reason(left_ml: float, right_ml: float, rules: StatusRules = StatusRules()) -> str:
    """Why the two sides cannot both be right (one more than ``max_side_ratio`` times the
    other), or '' (also when a side is empty: that is its own rule).

    Example:
        >>> asymmetry_reason(2.1, 4.4)
        'right 4.4 mL is 2.1 times left 2.1 mL (over 2)'
    """
    if left_ml <= 0 or right_ml <= 0:
        return ""
    (big, big_ml), (small, small_ml) = sorted(
        (("left", left_ml), ("right", right_ml)), key=lambda t: -t[1]
    )
    ratio = big_ml / small_ml
    if ratio <= rules.max_side_ratio:
        return ""
    return (
        f"{big} {big_ml:.3g} mL is {ratio:.2g} times {small} {small_ml:.3g} mL "
        f"(over {rules.max_side_ratio:g})"
    )


def side_review_reasons(
    left_ml: float,
    right_ml: float,
    shape: Sequence[int],
    spacing: Sequence[float],
    rules: StatusRules = StatusRules(),
    crop: bool = False,
) -> dict[str, list[str]]:
    """Per side, the rules that send it to review (module docstring); empty lists when none.

    Example:
        >>> side_review_reasons(2.1, 4.4, (160, 192, 176), (1.0, 1.0, 1.0))["left"]
        ['right 4.4 mL is 2.1 times left 2.1 mL (over 2)']
        >>> side_review_reasons(0.0, 3.0, (160, 192, 176), (1.0, 1.0, 1.0))["left"]
        ['not found']
    """
    scan = [f"scan: {p}" for p in input_problems(shape, spacing, rules, crop)]
    if crop:
        return _crop_review_reasons(left_ml, right_ml, scan, rules)
    ratio = asymmetry_reason(left_ml, right_ml, rules)
    out: dict[str, list[str]] = {}
    for side, ml in (("left", left_ml), ("right", right_ml)):
        out[side] = [*scan, *_volume_reasons(ml, rules), *([ratio] if ratio else [])]
    return out


def _volume_problem(ml: float, rules: StatusRules) -> str:
    """Why a found hippocampus's volume is implausible, or ''."""
    if rules.min_side_ml <= ml <= rules.max_side_ml:
        return ""
    return f"volume {ml:.3g} mL outside {rules.min_side_ml:g}-{rules.max_side_ml:g} mL"


def _volume_reasons(ml: float, rules: StatusRules) -> list[str]:
    """The review reasons of one hippocampus's volume: not found, or implausible."""
    if ml <= 0:
        return ["not found"]
    problem = _volume_problem(ml, rules)
    return [problem] if problem else []


def _crop_review_reasons(
    left_ml: float, right_ml: float, scan: list[str], rules: StatusRules
) -> dict[str, list[str]]:
    """:func:`side_review_reasons` of a crop: the larger label is its hippocampus (judged on
    both labels' volume); a second label goes to review; the side it does not hold, none."""
    held, other = ("left", "right") if left_ml >= right_ml else ("right", "left")
    total = left_ml + right_ml
    reasons = [*scan, *_volume_reasons(total, rules)]
    out = {held: reasons, other: list(reasons) if total <= 0 else []}
    if min(left_ml, right_ml) > 0:
        out[other] = [*scan, "a crop holds one hippocampus: a second label beside it"]
    return out
