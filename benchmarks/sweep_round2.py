"""Bad-input sweep, round 2 (issue 20): classes run by ``bad_input_sweep.py`` after the first.

Absent files (dangling links, as unfetched git-annex/DataLad content leaves them) in folders,
BIDS datasets, evaluation folders and training tables; an output folder that is the raw BIDS
dataset or inside it; truncated sidecars and label maps in an output folder (report, rerun,
group level); the reason of each failed BIDS image; reports on folders without results; grids
that differ only in their affines; predictions named after their inputs; a 0.5 mm head
against a 1 mm one; cohorts whose values cannot be right; a bright artefact far from the
hippocampi. Each is judged on its exit code, its one-line message and what it wrote (a result
that is wrong but exits as if right is a ``WRONG ANSWER``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from lofihippseg.reporting.cohort import collect_cohort

Check = Callable[[object], "str | None"]
EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "lofihippseg" / "data" / "examples"
ANNEX = "../../.git/annex/objects/Xk/K1/SHA256E-s9--0.nii.gz/SHA256E-s9--0.nii.gz"


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _dangling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(ANNEX)
    return path


def _has(*words: str, where: str = "err") -> Check:
    """A check: every word is in stderr (or stdout)."""

    def check(outcome) -> str | None:
        text = getattr(outcome, where)
        missing = [w for w in words if w not in text]
        return f"{where} lacks {missing[0]!r}" if missing else None

    return check


def _dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    x, y = a == value, b == value
    return float(2 * (x & y).sum() / max(x.sum() + y.sum(), 1))


def _labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


class Round2:
    """The issue-20 classes; ``sweep`` is the running ``bad_input_sweep.Sweep``."""

    def __init__(self, sweep) -> None:
        self.sweep = sweep
        self.root = sweep.root / "round2"
        self.data, self.affine = sweep.scan
        self.labels = sweep.labels

    def scan(self, path: Path) -> Path:
        return _save(path, self.data, self.affine)

    def bids(self, name: str, absent: bool = False, corrupt: bool = False) -> Path:
        root = self.root / name
        root.mkdir(parents=True, exist_ok=True)
        (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
        self.scan(root / "sub-01/anat/sub-01_T2w.nii.gz")
        if absent:
            _dangling(root / "sub-07/anat/sub-07_T2w.nii.gz")
        if corrupt:
            bad = self.scan(root / "sub-06/anat/sub-06_T2w.nii.gz")
            bad.write_bytes(bad.read_bytes()[:300])
        return root

    def bids_args(self, raw: Path, out: Path, level: str, *extra) -> list:
        args = ["bids", raw, out, level, *extra]
        if level == "participant":
            args += ["--model", self.sweep.model, "--device", "cpu", "--quiet", "--no-qc"]
        return args

    # --- the classes ------------------------------------------------------------------------

    def absent(self) -> None:
        s, root = self.sweep, self.root / "absent"
        folder = root / "folder"
        self.scan(folder / "b.nii.gz")
        a = _dangling(folder / "a.nii.gz")
        s.verify("absent:in a folder", "predict", s.predict_args([folder], root / "p1"), 1,
                 _has(f"{a}: absent", "datalad get"))  # fmt: skip
        s.verify("absent:named", "predict", s.predict_args([a], root / "p2"), 2, _has("absent"))
        raw = self.bids("bids_absent", absent=True)
        labels = ("--participant-label", "07", "01")
        s.verify("absent:bids 07 01", "bids participant",
                 self.bids_args(raw, root / "d1", "participant", *labels), 1,
                 _has("sub-07_T2w.nii.gz: absent", "datalad get"))  # fmt: skip

        def not_no_images(outcome) -> str | None:
            if "no T2w images" in outcome.err:
                return "says 'no T2w images found' though the file is there"
            return _has("sub-07_T2w.nii.gz: absent")(outcome)

        s.verify("absent:bids 07 alone", "bids participant",
                 self.bids_args(raw, root / "d2", "participant", "--participant-label", "07"),
                 1, not_no_images)  # fmt: skip
        gt = root / "gt"
        _save(gt / "c1_hipp.nii.gz", *self.labels)
        _dangling(gt / "c2_hipp.nii.gz")
        s.verify("absent:ground truth", "evaluate", ["evaluate", gt, gt, "-o", root / "e"], 2,
                 _has("c2_hipp.nii.gz: absent"))  # fmt: skip
        table = root / "train.csv"
        img, lab = s.good_cases[0]
        table.write_text(f"image,label\n{img},{lab}\n{a},{lab}\n")
        s.verify("absent:training table", "train", s.train_args([table], root / "runs"), 2,
                 _has("absent"))  # fmt: skip

    def raw_output(self) -> None:
        s = self.sweep
        raw = self.bids("bids_raw")
        before = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*"))

        def untouched(outcome) -> str | None:
            after = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*"))
            if after != before:
                return f"wrote into the raw dataset: {sorted(set(after) - set(before))[:3]}"
            return _has("never write into it")(outcome)

        for level in ("group", "participant"):
            s.verify("raw-output:OUT = RAW", f"bids {level}", self.bids_args(raw, raw, level), 2,
                     untouched)  # fmt: skip
        s.verify("raw-output:OUT = RAW/sub-01", "bids participant",
                 self.bids_args(raw, raw / "sub-01", "participant"), 2, untouched)  # fmt: skip
        deriv = raw / "derivatives" / "lofihippseg"
        s.verify("raw-output:RAW/derivatives/x", "bids participant",
                 self.bids_args(raw, deriv, "participant"), 0)  # fmt: skip

    def unreadable_outputs(self) -> None:
        s, root = self.sweep, self.root / "outputs"
        for i in range(3):
            self.scan(root / "in" / f"c{i}.nii.gz")
        out = root / "out"
        s.verify("round2:setup", "predict", s.predict_args([root / "in"], out), 0)
        sidecar = out / "c1_hipp.json"
        sidecar.write_text(sidecar.read_text()[:50])
        labels = out / "c2_hipp.nii.gz"
        labels.write_bytes(labels.read_bytes()[:-30])
        s.verify("sidecar:truncated", "report", ["report", out], 0,
                 _has("1 failed", where="out"))  # fmt: skip

        def redone(outcome) -> str | None:
            problem = _has("2 done, 1 skipped", where="out")(outcome)
            if problem is None and json.loads(sidecar.read_text()).get("tool") != "lofihippseg":
                return "the truncated sidecar is still there"
            return problem

        s.verify("sidecar+labels:truncated", "predict (rerun)",
                 s.predict_args([root / "in"], out), 0, redone)  # fmt: skip
        raw = self.bids("bids_sidecar")
        deriv = root / "deriv"
        s.verify("round2:setup", "bids participant", self.bids_args(raw, deriv, "participant"), 0)
        [dseg] = deriv.rglob("*_dseg.json")
        dseg.write_text("{")
        s.verify("sidecar:truncated", "bids group",
                 self.bids_args(raw, deriv, "group", "--no-report"), 0,
                 _has("1 failed image(s)", where="out"))  # fmt: skip

    def bids_reasons(self) -> None:
        raw = self.bids("bids_corrupt", corrupt=True)
        self.sweep.verify("bids:corrupt image", "bids participant",
                          self.bids_args(raw, self.root / "reasons", "participant"), 1,
                          _has("error: ", "sub-06_T2w.nii.gz: "))  # fmt: skip

    def reports(self) -> None:
        s, root = self.sweep, self.root / "reports"
        empty = root / "empty"
        empty.mkdir(parents=True)
        s.verify("report:empty folder", "report", ["report", empty], 2, _has("no lofihippseg"))
        only = root / "csv_only"
        only.mkdir()
        (only / "volumes.csv").write_text("case,left_ml,right_ml,status\nc1,3.0,3.1,ok\n")
        s.verify("report:only volumes.csv", "report", ["report", only], 2, _has("volumes.csv"))
        binary = root / "csv_binary"
        binary.mkdir()
        (binary / "volumes.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 20)
        s.verify("report:binary volumes.csv", "report", ["report", binary], 2,
                 _has("volumes.csv"))  # fmt: skip
        s.verify("predict:binary volumes.csv", "predict",
                 s.predict_args([s.good_cases[0][0]], binary), 2, _has("volumes.csv"))  # fmt: skip

    def grids(self) -> None:
        s, root = self.sweep, self.root / "grids"
        data, affine = self.labels
        gt = _save(root / "gt" / "case_hipp.nii.gz", data, affine)
        rotation = np.eye(4)
        angle = np.radians(10)
        rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        shifted = affine.copy()
        shifted[:3, 3] += [12.0, 16.0, 0.0]
        coarser = affine.copy()
        coarser[:3, :3] *= 1.25
        flipped = affine @ np.diag([-1.0, 1, 1, 1])
        flipped[:3, 3] = affine[:3, :3] @ [data.shape[0] - 1, 0, 0] + affine[:3, 3]
        for name, pred_affine, pred_data, words in (
            ("origin 20 mm", shifted, data, "origins 20 mm apart"),
            ("voxel size", coarser, data, "voxel sizes"),
            ("rotated 10 degrees", rotation @ affine, data, "orientations differ by 10 degrees"),
        ):
            pred = _save(root / name / "case_hipp.nii.gz", pred_data, pred_affine)
            s.verify(f"grid:{name}", "evaluate", ["evaluate", pred, gt, "-o", root / "e"], 2,
                     _has(words))  # fmt: skip
        same = _save(root / "voxel order" / "case_hipp.nii.gz", data[::-1].copy(), flipped)
        s.verify("grid:other voxel order", "evaluate", ["evaluate", same, gt, "-o", root / "e"],
                 0, _has("Dice", where="out"))  # fmt: skip
        truth = root / "truth"
        for name in ("LISA_0001", "LISA_0002"):
            _save(truth / f"{name}_hipp.nii.gz", data, affine)
        for pattern in ("{}_ciso", "{}_ciso_hipp"):
            preds = root / pattern.format("x")
            for name in ("LISA_0001", "LISA_0002"):
                _save(preds / f"{pattern.format(name)}.nii.gz", data, affine)
            s.verify(f"names:{pattern.format('LISA_XXXX')}", "evaluate",
                     ["evaluate", preds, truth, "-o", root / "e"], 0,
                     _has("2 case(s) evaluated, 0 missing", where="out"))  # fmt: skip

    def cohort(self) -> None:
        s, root = self.sweep, self.root / "cohort"
        root.mkdir(parents=True)
        values = [(f"c{i}", a, 3.0) for i, a in enumerate(np.linspace(-0.44, 0.44, 9))]
        values.append(("tiny_ok", 0.0, 0.3))  # a volume that cannot be right, status ok
        for case, ai, ml in values:
            volumes = {"case": case, "left_ml": ml * (1 + ai / 2), "right_ml": ml * (1 - ai / 2),
                       "asymmetry_index": ai, "view_dice": 0.9, "status": "ok"}  # fmt: skip
            sidecar = {"tool": "lofihippseg", "version": "0", "volumes": volumes, "status": "ok"}
            (root / f"{case}_hipp.json").write_text(json.dumps(sidecar))

        def flagged(outcome) -> str | None:
            got = {c.case for c in collect_cohort(root).cases if c.flagged}
            want = {c for c, ai, ml in values if abs(ai) > 0.2 or ml < 0.5}
            if got != want:
                return f"flagged {sorted(got)}, expected {sorted(want)}"
            html = (root / "report.html").read_text()
            return None if "|asymmetry index| &gt; 0.2" in html else "the rule is not stated"

        s.verify("cohort:AI -0.44..0.44, 0.3 mL", "report", ["report", root], 0, flagged)

    def fine_voxels(self) -> None:
        from bench_fine_voxels import PeakSampler, resampled_head, rss_bytes

        s, root = self.sweep, self.root / "fine"
        root.mkdir(parents=True)
        scans = {mm: resampled_head(mm, root / f"head_{mm:g}mm.nii.gz") for mm in (1.0, 0.5)}
        figures = {}

        def args(mm: float) -> list:
            return ["predict", scans[mm], "-o", root / f"out{mm:g}", "--device", "cpu",
                    "--quiet", "--no-qc", "--overwrite"]  # fmt: skip

        s.verify("round2:setup", "predict", args(1.0), 0)  # warm-up (shipped model loaded once)
        for mm in (1.0, 0.5):
            before = rss_bytes()
            with PeakSampler() as sampler:
                start = time.perf_counter()
                s.verify(f"fine:{mm:g} mm head", "predict", args(mm), 0)
                figures[mm] = (time.perf_counter() - start, sampler.peak - before)
        row = s.rows[-1]
        if row.klass != "fine:0.5 mm head":
            return
        fine_labels = root / "out0.5" / "head_0.5mm_hipp.nii.gz"
        coarse_labels = root / "out1" / "head_1mm_hipp.nii.gz"
        if row.passed:
            fine, coarse = nib.load(str(fine_labels)), _labels(coarse_labels)
            source = nib.load(str(scans[0.5]))
            up = (
                coarse.repeat(2, 0)
                .repeat(2, 1)
                .repeat(2, 2)[tuple(slice(0, n) for n in fine.shape)]
            )
            dice = [_dice(up, np.asarray(fine.dataobj), v) for v in (1, 2)]
            (t1, m1), (t05, m05) = figures[1.0], figures[0.5]
            row.message = (
                f"time x{t05 / t1:.2f} ({t05:.1f} s), memory x{m05 / max(m1, 1):.2f} "
                f"({m05 / 2**20:.0f} MiB) vs 1 mm; Dice vs 1 mm {dice[0]:.2f}/{dice[1]:.2f}"
            )
            if fine.shape != source.shape or not np.allclose(fine.affine, source.affine):
                row.passed, row.message = False, "WRONG ANSWER labels not on the input's grid"
            elif min(dice) < 0.8:
                row.passed, row.message = False, f"WRONG ANSWER {row.message}"

    def artefact(self) -> None:
        """A 3x3x3 blob at 50x the head's maximum, 40 mm from both hippocampi (issue 20, 4)."""
        from scipy import ndimage

        s, root = self.sweep, self.root / "artefact"
        img = nib.load(str(EXAMPLES / "synthetic_lowfield_example.nii.gz"))
        data = np.asarray(img.dataobj, dtype=np.float32)
        gt = np.asarray(nib.load(str(EXAMPLES / "synthetic_lowfield_example_hipp.nii.gz")).dataobj)
        zooms = img.header.get_zooms()[:3]
        distance = ndimage.distance_transform_edt(gt == 0, sampling=zooms)
        near = np.argwhere((np.abs(distance - 40) < 3) & (data > 0.3 * data.max()))
        centre = near[len(near) // 2]
        spiked = data.copy()
        spiked[tuple(slice(max(c - 1, 0), c + 2) for c in centre)] = 50 * data.max()
        paths = {"clean": _save(root / "clean.nii.gz", data, img.affine),
                 "spiked": _save(root / "spiked.nii.gz", spiked, img.affine)}  # fmt: skip
        for name, path in paths.items():
            s.verify("round2:setup" if name == "clean" else "artefact:blob 50x, 40 mm", "predict",
                     ["predict", path, "-o", root / name, "--device", "cpu", "--quiet",
                      "--no-qc"], 0)  # fmt: skip
        row = s.rows[-1]
        if row.klass.startswith("artefact") and row.passed:
            a = _labels(root / "clean" / "clean_hipp.nii.gz")
            b = _labels(root / "spiked" / "spiked_hipp.nii.gz")
            dice = [_dice(a, b, v) for v in (1, 2)]
            row.message = f"Dice with vs without the blob: left {dice[0]:.3f}, right {dice[1]:.3f}"
            if min(dice) < 0.9:
                row.passed, row.message = False, f"WRONG ANSWER {row.message} (< 0.9)"

    def run_all(self) -> None:
        parts = (
            self.absent,
            self.raw_output,
            self.unreadable_outputs,
            self.bids_reasons,
            self.reports,
            self.grids,
            self.cohort,
            self.fine_voxels,
            self.artefact,
        )
        for part in parts:
            if self.sweep.only and self.sweep.only not in part.__name__ + " round2":
                continue
            part()
