"""Naming and describing lofihippseg's BIDS derivatives.

For an input ``sub-01/ses-1/anat/sub-01_ses-1_acq-lf_T2w.nii.gz`` the participant level writes::

    OUTPUT_DIR/
      dataset_description.json          DatasetType derivative, GeneratedBy (tool, version, model)
      desc-hippocampus_dseg.tsv         label table: index, name, abbreviation, color
      .bidsignore                       our non-BIDS extras (figures, tables, logs, report)
      sub-01/
        sub-01_desc-hippocampus_volumes.tsv      one row per segmented image of the subject
        figures/sub-01_ses-1_acq-lf_space-orig_desc-hippocampus_dseg.png   QC picture
        ses-1/anat/
          sub-01_ses-1_acq-lf_space-orig_desc-hippocampus_dseg.nii.gz  labels, input's grid
          sub-01_ses-1_acq-lf_space-orig_desc-hippocampus_dseg.json    sidecar with Sources
          sub-01_ses-1_acq-lf_space-orig_label-{Left,Right}Hippocampus_desc-hippocampus_probseg.nii.gz
      logs/CASE_failed.json             one per failed image (removed when it succeeds)

``space-orig``: the label map is on the input image's own grid (no resampling).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lofihippseg.bids.dataset import BidsImage
from lofihippseg.bids.entities import BidsName, parse_name
from lofihippseg.config import save_json
from lofihippseg.errors import LoFiError
from lofihippseg.inference.layout import FAILURE_SUFFIX, FAILURES_DIR, OutputLayout
from lofihippseg.io.atomic import atomic_path
from lofihippseg.io.paths import safe_output_path
from lofihippseg.reporting.volumes import quality_columns

log = logging.getLogger(__name__)

SPACE = "orig"
DESC = "hippocampus"
BIDS_VERSION = "1.10.0"
LABELS = (
    (0, "background", "BG", "#000000"),
    (1, "Left-Hippocampus", "L-Hip", "#ff3b30"),
    (2, "Right-Hippocampus", "R-Hip", "#1e90ff"),
)
PROB_LABELS = {"prob_left": "LeftHippocampus", "prob_right": "RightHippocampus"}
TABLE_COLUMNS = (
    "participant_id",
    "session_id",
    "source",
    "left_ml",
    "right_ml",
    "asymmetry_index",
    "view_dice",
    "contrast_family",  # the pair of networks that segmented the image (models with several)
    # per side: the quality estimator's predicted Dice (n/a: no estimator) and review flag
    "left_predicted_dice",
    "right_predicted_dice",
    "left_review",
    "right_review",
    "review_reasons",
    "status",
    "error",
)
VOLUME_COLUMNS = ("left_ml", "right_ml", "asymmetry_index", "view_dice")
BIDSIGNORE = ("logs/", "sub-*/figures/", "sub-*/*_volumes.tsv", "group_volumes.tsv", "*.html")


class BidsLayout(OutputLayout):
    """Derivatives names for :func:`lofihippseg.inference.api.predict` (see module docstring)."""

    def __init__(self, images: list[BidsImage]) -> None:
        self.images = {im.path.resolve(): im for im in images}

    def image(self, path: Path) -> BidsImage:
        """The BIDS image behind an input path."""
        try:
            return self.images[Path(path).resolve()]
        except KeyError:
            raise LoFiError(f"{path}: not one of the selected BIDS images") from None

    def paths(self, out_dir: Path, case: str, path: Path) -> dict[str, Path]:
        """Derivative files of one image."""
        image = self.image(path)
        dseg = image.name.replace(space=SPACE, desc=DESC, suffix="dseg", extension=".nii.gz")
        anat = Path(*Path(image.relpath).parent.parts)  # sub-X[/ses-Y]/anat
        subject_dir = Path(f"sub-{image.subject}")
        names = {
            "labels": anat / dseg.filename,
            "sidecar": anat / dseg.replace(extension=".json").filename,
            "qc": subject_dir / "figures" / dseg.replace(extension=".png").filename,
        }
        for key, label in PROB_LABELS.items():
            prob = image.name.replace(
                space=SPACE, label=label, desc=DESC, suffix="probseg", extension=".nii.gz"
            )
            names[key] = anat / prob.filename
        return {k: safe_output_path(out_dir, str(v)) for k, v in names.items()}

    def sidecar_extra(self, case: str, path: Path) -> dict[str, Any]:
        """BIDS keys of the dseg sidecar: its source image as a BIDS URI."""
        image = self.image(path)
        return {"Sources": [f"bids:raw:{image.relpath}"], "SpatialReference": "orig"}


def model_identity(source: str, spec: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """What names a model in ``GeneratedBy``: its origin, recipe, spec and weights' hash."""
    return {"Source": source, "Recipe": spec.get("recipe"), "SHA256": fingerprint, "Spec": spec}


def dataset_description(
    bids_dir: Path, raw_description: dict[str, Any], version: str, model: dict[str, Any]
) -> dict[str, Any]:
    """The derivative dataset's ``dataset_description.json`` content."""
    source: dict[str, Any] = {"URL": Path(bids_dir).resolve().as_uri()}
    if raw_description.get("DatasetDOI"):
        source["DOI"] = raw_description["DatasetDOI"]
    if raw_description.get("DatasetVersion"):
        source["Version"] = raw_description["DatasetVersion"]
    return {
        "Name": "lofihippseg: hippocampus segmentation",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "lofihippseg",
                "Version": version,
                "Description": (
                    "Left and right hippocampus segmentation of low-field MRI (dual-view VNets, "
                    f"LoFiHippSeg method); model {model['Source']} (recipe {model['Recipe']})."
                ),
                "Model": model,
            }
        ],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": source["URL"]},
    }


def write_dataset_files(out_dir: Path, description: dict[str, Any], overwrite: bool) -> None:
    """Write ``dataset_description.json``, the label table and ``.bidsignore`` (atomically).

    Parallel participant runs write identical content, so the last rename wins harmlessly.

    Raises:
        LoFiError: the folder holds results of another tool or model (unless ``overwrite``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "dataset_description.json"
    if path.is_file() and not overwrite:
        try:
            old = json.loads(path.read_text())["GeneratedBy"][0]["Model"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LoFiError(
                f"{path}: not written by lofihippseg; use another output folder"
            ) from None
        new = description["GeneratedBy"][0]["Model"]
        key = ("SHA256", "Recipe")
        if [old.get(k) for k in key] != [new.get(k) for k in key]:
            raise LoFiError(
                f"{out_dir}: holds results of another model ({old.get('Source')}, recipe "
                f"{old.get('Recipe')}); use another output folder, or --overwrite to redo "
                "every subject with this model"
            )
    save_json(description, path)
    lines = ["index\tname\tabbreviation\tcolor"]
    lines += [f"{i}\t{name}\t{abbr}\t{colour}" for i, name, abbr, colour in LABELS]
    _write_text(out_dir / f"desc-{DESC}_dseg.tsv", "\n".join(lines) + "\n")
    _write_text(out_dir / ".bidsignore", "\n".join(BIDSIGNORE) + "\n")


def _write_text(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _tsv_value(value: Any) -> str:
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return "n/a"
    return str(value).replace("\t", " ").replace("\n", " ")


def write_tsv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Path:
    """Write rows as a BIDS TSV (``n/a`` for missing values), atomically."""
    lines = ["\t".join(columns)]
    lines += ["\t".join(_tsv_value(row.get(c)) for c in columns) for row in rows]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def _quality_columns(quality: Any) -> dict[str, Any]:
    """The TSV's per-side quality columns of a sidecar's ``quality`` block (absent: n/a)."""
    if not isinstance(quality, dict):
        return {}
    out = quality_columns(quality)
    return {k: None if isinstance(v, float) and v != v else v for k, v in out.items()}


def subject_rows(out_dir: Path, subject: str) -> list[dict[str, Any]]:
    """Rows of one subject, read from what predict wrote (sidecars and failure records)."""
    rows = []
    for sidecar in sorted((out_dir / f"sub-{subject}").rglob(f"*_desc-{DESC}_dseg.json")):
        name = parse_name(sidecar.name)
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):  # truncated or corrupt: a failed image, never dropped
            rows.append(
                {
                    "participant_id": f"sub-{subject}",
                    "session_id": f"ses-{name.get('ses')}" if name.get("ses") else None,
                    "source": sidecar.name,
                    "status": "failed",
                    "error": f"{sidecar}: unreadable sidecar; rerun the participant level",
                }
            )
            continue
        volumes = data.get("volumes", {})
        source = (data.get("Sources") or [""])[0].rsplit("/", 1)[-1]
        rows.append(
            {
                "participant_id": f"sub-{subject}",
                "session_id": f"ses-{name.get('ses')}" if name.get("ses") else None,
                "source": source,
                **{k: volumes.get(k) for k in VOLUME_COLUMNS},
                "contrast_family": (data.get("effective") or {}).get("contrast_family"),
                **_quality_columns(data.get("quality")),
                "status": data.get("status") or volumes.get("status") or "ok",
                "error": None,
            }
        )
    for record in sorted((out_dir / FAILURES_DIR).glob(f"sub-{subject}_*{FAILURE_SUFFIX}")):
        try:
            data = json.loads(record.read_text())
            name = parse_name(Path(data["input"]).name)
        except (OSError, ValueError, KeyError, LoFiError):
            continue
        if name.get("sub") != subject:
            continue
        rows.append(
            {
                "participant_id": f"sub-{subject}",
                "session_id": f"ses-{name.get('ses')}" if name.get("ses") else None,
                "source": Path(data["input"]).name,
                "status": "failed",
                "error": data.get("error", ""),
            }
        )
    return sorted(rows, key=lambda r: (str(r["session_id"]), r["source"]))


def subject_table_path(out_dir: Path, subject: str) -> Path:
    """``sub-X/sub-X_desc-hippocampus_volumes.tsv``."""
    return out_dir / f"sub-{subject}" / f"sub-{subject}_desc-{DESC}_volumes.tsv"


def write_subject_table(out_dir: Path, subject: str) -> Path:
    """(Re)write one subject's volumes TSV from its sidecars and failure records."""
    return write_tsv(
        subject_table_path(out_dir, subject), subject_rows(out_dir, subject), TABLE_COLUMNS
    )


def derivative_subjects(out_dir: Path) -> list[str]:
    """Participants present in the derivatives (a folder or a failure record)."""
    subjects = {p.name[4:] for p in out_dir.glob("sub-*") if p.is_dir()}
    for record in (out_dir / FAILURES_DIR).glob(f"sub-*{FAILURE_SUFFIX}"):
        try:
            subjects.add(parse_name(record.name[: -len(FAILURE_SUFFIX)]).entities["sub"])
        except LoFiError:
            continue
    return sorted(subjects)


STACKS_REC = "stacks"  # rec- entity of a label map made from a session's combined stacks


def stacks_name(images: list[BidsImage]) -> BidsName:
    """The BIDS name of a session's combined stacks: their shared entities plus ``rec-stacks``.

    Example:
        >>> stacks_name(group).filename  # doctest: +SKIP
        'sub-01_ses-1_rec-stacks_T2w.nii.gz'
    """
    return images[0].name.replace(acq=None, run=None, rec=STACKS_REC)


class BidsStacksLayout(BidsLayout):
    """:class:`BidsLayout` for sessions whose stacks are combined (``bids --group-stacks``).

    A group's outputs are named by :func:`stacks_name` (``acq-``/``run-`` dropped,
    ``rec-stacks`` added, no ``space-``: the label map lies on a 1 mm grid in the first
    stack's world space, which ``SpatialReference`` names); label maps on each stack's own
    grid (``--save-stack-labels``) keep that stack's entities, with ``rec-stacks`` and
    ``space-orig``. Single images are named as by :class:`BidsLayout`.
    """

    def __init__(self, groups: list[list[BidsImage]]) -> None:
        super().__init__([im for g in groups for im in g])
        self.groups = {g[0].path.resolve(): g for g in groups}

    def group(self, path: Path) -> list[BidsImage] | None:
        """The stacks a (first stack's) path stands for, None for a single image."""
        group = self.groups.get(Path(path).resolve())
        return group if group and len(group) > 1 else None

    def case_id(self, path: Path) -> str:
        """A group's case is its combined name's stem."""
        group = self.group(path)
        return stacks_name(group).stem if group else super().case_id(path)

    def paths(self, out_dir: Path, case: str, path: Path) -> dict[str, Path]:
        """Derivative files of one image or one group of stacks."""
        group = self.group(path)
        if group is None:
            return super().paths(out_dir, case, path)
        name = stacks_name(group)
        dseg = name.replace(desc=DESC, suffix="dseg", extension=".nii.gz")
        anat = Path(*Path(group[0].relpath).parent.parts)
        names = {
            "labels": anat / dseg.filename,
            "sidecar": anat / dseg.replace(extension=".json").filename,
            "qc": Path(
                f"sub-{group[0].subject}", "figures", dseg.replace(extension=".png").filename
            ),
            "combined": anat / name.replace(desc="combined", extension=".nii.gz").filename,
        }
        for key, label in PROB_LABELS.items():
            prob = name.replace(label=label, desc=DESC, suffix="probseg", extension=".nii.gz")
            names[key] = anat / prob.filename
        return {k: safe_output_path(out_dir, str(v)) for k, v in names.items()}

    def stack_paths(self, out_dir: Path, path: Path) -> list[Path]:
        """Label maps on each stack's own grid (``rec-stacks_space-orig``)."""
        group = self.group(path) or [self.image(path)]
        out = []
        for image in group:
            dseg = image.name.replace(
                rec=STACKS_REC, space=SPACE, desc=DESC, suffix="dseg", extension=".nii.gz"
            )
            out.append(safe_output_path(out_dir, str(Path(image.relpath).parent / dseg.filename)))
        return out

    def sidecar_extra(self, case: str, path: Path) -> dict[str, Any]:
        """A group's sources are all its stacks; its spatial reference is the first stack."""
        group = self.group(path)
        if group is None:
            return super().sidecar_extra(case, path)
        return {
            "Sources": [f"bids:raw:{im.relpath}" for im in group],
            "SpatialReference": f"bids:raw:{group[0].relpath}",
        }
