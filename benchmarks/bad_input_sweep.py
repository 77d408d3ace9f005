"""Bad-input sweep: build malformed and unusual inputs, run every command on them, judge.

Usage:
    python benchmarks/bad_input_sweep.py [--workdir DIR] [--only SUBSTRING]

Each input class (missing, not NIfTI, truncated, zero bytes, 4D, complex, NaN, empty, constant,
tiny, 2D, anisotropic, huge field of view, sheared, singular, qform/sform disagreeing, codes 0,
huge values, Analyze, DICOM, label values 255 and 3, MGZ, a scan named ``*_hipp``), each bad
model file (hostile pickles, text, zero bytes, truncated, NaN weights, bad specs, foreign
weights), bad option values, resume misuse, unwritable outputs and DICOM series (issue 42: good
ones, oblique, LPS, enhanced multi-frame, a missing slice, no pixel data, mixed studies, one
dcm2niix refuses, 2D, localiser only, no DICOM, two studies as stacks, a batch that goes on past
its bad series; none may write into its input folder) is run through the commands
that take it (``predict``, ``view``, ``evaluate``, ``train``, ``synth``) in this process, as
``lofihippseg ...`` would run them.

Then the round-2 classes of ``sweep_round2.py`` (issue 20): absent (unfetched annex) files,
an output folder inside the raw BIDS dataset, truncated sidecars and label maps, BIDS failure
reasons, reports on folders without results, grids differing only in their affines,
predictions named after their inputs, a 0.5 mm head against a 1 mm one, cohorts whose values
cannot be right and a bright artefact far from the hippocampi (these run the shipped model).

A case passes when nothing printed a traceback and the outcome is the expected one: ``error``
= exit code 2 with exactly one ``error:`` line; ``ok`` = exit code 0 (``ok:STATUS`` also needs
that quality status in ``volumes.csv``); ``any`` = either of those; ``some failed`` = exit code
1; round-2 cases also check what was printed or written (else ``WRONG ANSWER``). Prints a table
(class, command, exit code, expected, verdict, message) and a summary; exits 1 on any failure
(a traceback, an unexpected success, a wrong answer or an unexpected error).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from lofihippseg.cli import main
from lofihippseg.models.registry import ModelSpec, build_vnet, bundle_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_round2 import Round2  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lofihippseg" / "data"
SCAN = PACKAGE / "examples" / "synthetic_lowfield_example.nii.gz"
LABELS = PACKAGE / "examples" / "synthetic_lowfield_example_hipp.nii.gz"
LABEL_MAP = PACKAGE / "label_maps" / "synthseg_seg_01.nii.gz"
N_FILTERS = 4


# --- outcome of one run ------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    crash: str = ""  # an exception that escaped main()

    @property
    def traceback(self) -> bool:
        return bool(self.crash) or "Traceback" in self.out or "Traceback" in self.err

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def run(args: list[str | Path]) -> Outcome:
    """Run ``lofihippseg ARGS`` in this process, capturing everything it prints."""
    out, err = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()  # the CLI's basicConfig then logs into this run's stderr
    code, crash = 0, ""
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # noqa: BLE001 - a traceback is what we look for
            code, crash = 99, f"{type(exc).__name__}: {exc}"
    return Outcome(code, out.getvalue(), err.getvalue(), crash)


def judge(outcome: Outcome, expected: str, status_of: Callable[[], str] | None) -> tuple[bool, str]:
    """(passed, message shown in the table)."""
    if outcome.traceback:
        return False, f"TRACEBACK {outcome.crash or outcome.err.strip().splitlines()[-1]}"
    message = outcome.error_lines[0] if outcome.error_lines else ""
    kind = expected.split(":")[0]
    if outcome.code == 0:
        status = status_of() if status_of else ""
        message = f"status {status}" if status else "done"
        if kind == "error":
            return False, f"UNEXPECTED SUCCESS ({message})"
        if ":" in expected and status != expected.split(":", 1)[1]:
            return False, f"WRONG STATUS {status!r}, expected {expected.split(':', 1)[1]!r}"
        return True, message
    one_line = outcome.code == 2 and len(outcome.error_lines) == 1
    if kind == "ok":
        return False, f"UNEXPECTED ERROR {message or outcome.err.strip()[-200:]}"
    if not one_line:
        return False, f"NOT ONE LINE (exit {outcome.code}): {outcome.err.strip()[-200:]}"
    return True, message


# --- inputs ------------------------------------------------------------------------------------


def _save(path: Path, data: np.ndarray, affine: np.ndarray, qform=None, codes=(1, 1)) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine if qform is None else qform, code=codes[0])
    img.set_sform(affine, code=codes[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _base(path: Path, step: int) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)[::step, ::step, ::step]
    affine = img.affine.copy()
    affine[:3, :3] *= step
    return np.ascontiguousarray(data), affine


def make_input(kind: str, data: np.ndarray, affine: np.ndarray, folder: Path) -> Path:
    """Write the ``kind`` variant of (data, affine) under ``folder``; returns the path to give."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "case.nii.gz"
    float_data = data.astype(np.float32)
    if kind in ("valid", "hipp_named"):
        if kind == "hipp_named":
            path = folder / "sub01_hipp.nii.gz"
        return _save(path, data, affine)
    if kind == "mgz":
        path = folder / "case.mgz"
        nib.save(nib.MGHImage(data.astype(np.float32), affine), str(path))
        return path
    if kind == "missing":
        return folder / "absent.nii.gz"
    if kind == "not_nifti":
        path.write_bytes(gzip.compress(b"subject,age\n01,34\n"))
        return path
    if kind == "truncated":
        good = _save(folder / "good.nii.gz", data, affine).read_bytes()
        path.write_bytes(good[: len(good) // 3])
        (folder / "good.nii.gz").unlink()
        return path
    if kind == "zero_byte":
        path.write_bytes(b"")
        return path
    if kind == "4d":
        return _save(path, np.stack([float_data] * 3, axis=-1), affine)
    if kind == "complex":
        return _save(path, float_data.astype(np.complex64) * (1 + 1j), affine)
    if kind == "nan":
        bad = float_data.copy()
        bad[tuple(s // 2 for s in bad.shape)] = np.nan
        return _save(path, bad, affine)
    if kind == "empty":
        return _save(path, np.zeros_like(data), affine)
    if kind == "constant":
        return _save(path, np.full(data.shape, 7, data.dtype), affine)
    if kind == "tiny":
        c = [s // 2 for s in data.shape]
        return _save(path, data[c[0] - 2 : c[0] + 3, c[1] - 2 : c[1] + 3, c[2] - 2 : c[2] + 3],
                     np.diag([1.0, 1.0, 1.0, 1.0]))  # fmt: skip
    if kind == "2d":
        return _save(path, data[:, :, data.shape[2] // 2 : data.shape[2] // 2 + 1], affine)
    if kind == "anisotropic":  # every 4th slice: voxels about 4x longer along axis 2 (e.g. 1x1x7)
        thick = affine.copy()
        thick[:3, 2] *= 7 / max(abs(affine[:3, 2]).max(), 1e-3) * abs(affine[:3, 0]).max()
        return _save(path, data[:, :, ::7], thick)
    if kind == "huge_fov":  # same voxels, 2.5x larger: a field of view of about 400 mm
        big = affine.copy()
        big[:3, :3] *= 400 / (np.array(data.shape) * np.abs(affine[:3, :3]).max(axis=0)).max()
        return _save(path, data, big)
    if kind == "sheared":
        sheared = affine.copy()
        sheared[:3, 1] += 0.5 * affine[:3, 0]
        return _save(path, data, sheared)
    if kind == "singular":
        flat = affine.copy()
        flat[:3, 2] = flat[:3, 1]
        return _save(path, data, flat)
    if kind == "qform_sform_disagree":
        rotated = affine.copy()
        rotated[:3, :3] = np.diag([-1, 1, 1]) @ affine[:3, :3]
        return _save(path, data, affine, qform=rotated)
    if kind == "codes_0":
        return _save(path, data, affine, codes=(0, 0))
    if kind == "huge_values":
        return _save(path, data.astype(np.float64) * 1e297 + 1e296, affine)
    if kind == "analyze":
        nib.save(nib.AnalyzeImage(float_data, affine), str(folder / "case.img"))
        return folder / "case.hdr"
    if kind == "dicom_file":
        path = folder / "IM0001.dcm"
        path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 256)
        return path
    if kind == "dicom_folder":
        sub = folder / "DICOM"
        sub.mkdir(exist_ok=True)
        for i in range(3):
            (sub / f"IM{i:04d}").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 256)
        return sub
    if kind == "labels_255":
        return _save(path, np.where(data > np.median(data), 255, 0).astype(np.uint8), affine)
    if kind == "label_3":
        extra = data.astype(np.int16).copy()
        extra.flat[0] = 3
        return _save(path, extra, affine)
    raise ValueError(kind)


# classes that are label maps gone wrong: ``train`` gets them as labels, not as scans
LABEL_CLASSES = ("labels_255", "label_3")
# class -> expected outcome for (predict, view, evaluate, train, synth)
IMAGE_CLASSES: dict[str, tuple[str, str, str, str, str]] = {
    "valid": ("ok", "ok", "ok", "ok", "ok"),
    "mgz": ("ok", "ok", "ok", "ok", "ok"),
    "hipp_named": ("ok", "ok", "ok", "ok", "ok"),
    "missing": ("error",) * 5,
    "not_nifti": ("error",) * 5,
    "truncated": ("error",) * 5,
    "zero_byte": ("error",) * 5,
    "4d": ("error",) * 5,
    "complex": ("error",) * 5,
    "nan": ("error",) * 5,
    "empty": ("error", "error", "ok", "error", "error"),
    "constant": ("error", "error", "error", "error", "error"),
    "tiny": ("ok:implausible_input", "ok", "error", "any", "error"),
    "2d": ("error",) * 5,
    "anisotropic": ("ok:implausible_input", "ok", "error", "any", "any"),
    "huge_fov": ("ok:implausible_input", "ok", "error", "any", "any"),
    "sheared": ("ok", "ok", "error", "ok", "any"),
    "singular": ("error",) * 5,
    "qform_sform_disagree": ("ok", "ok", "ok", "ok", "ok"),
    "codes_0": ("ok", "ok", "error", "ok", "any"),
    "huge_values": ("error",) * 5,
    "analyze": ("error",) * 5,
    "dicom_file": ("error",) * 5,
    "dicom_folder": ("error",) * 5,
    "labels_255": ("ok", "ok", "error", "error", "error"),
    "label_3": ("ok", "ok", "error", "error", "any"),
}


def make_model(kind: str, folder: Path) -> Path:
    """A bad (or, for ``valid``, good) model file of the given kind."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(n_filters=N_FILTERS)
    sd = build_vnet(spec).state_dict()
    path = folder / f"{kind}.pt"
    if kind == "valid":
        torch.save(bundle_dict(spec, sd, sd), path)
    elif kind == "hostile_object":
        torch.save(_Hostile(), path)
    elif kind == "hostile_function":
        torch.save({"vnet1": sd, "vnet2": sd, "hook": os.system}, path)
    elif kind == "hostile_reduce":
        torch.save({"spec": {"n_filters": 4}, "vnet1": _Hostile(), "vnet2": sd}, path)
    elif kind == "text_file":
        path.write_text("n_filters: 16\nweights: best_model_1.pth\n")
    elif kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save(bundle_dict(spec, sd, sd), path)
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "nan_weights":
        bad = {k: v.clone() for k, v in sd.items()}
        bad["encoder.block_one.conv.0.weight"][:] = float("nan")
        torch.save(bundle_dict(spec, bad, bad), path)
    elif kind == "spec_not_numeric":
        torch.save({**bundle_dict(spec, sd, sd), "spec": {"n_filters": "sixteen"}}, path)
    elif kind == "spec_n_filters_0":
        torch.save({**bundle_dict(spec, sd, sd), "spec": {"n_filters": 0}}, path)
    elif kind == "foreign_weights":
        torch.save({"fc.weight": torch.ones(3, 3)}, path)
    elif kind == "empty_run_folder":
        path = folder / "run"
        path.mkdir(exist_ok=True)
    else:
        raise ValueError(kind)
    return path


class _Hostile:
    """A pickle that would run code when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


# model kind -> expected for (predict --model, train --init1)
MODEL_CLASSES = {
    "valid": ("ok", "ok"),
    "hostile_object": ("error", "error"),
    "hostile_function": ("error", "error"),
    "hostile_reduce": ("error", "error"),
    "text_file": ("error", "error"),
    "zero_byte": ("error", "error"),
    "truncated": ("error", "error"),
    "nan_weights": ("error", "error"),
    "spec_not_numeric": ("error", "any"),  # --init1 uses only the weights
    "spec_n_filters_0": ("error", "any"),
    "foreign_weights": ("error", "error"),
    "empty_run_folder": ("error", "error"),
}


# --- the sweep ---------------------------------------------------------------------------------


@dataclass
class Row:
    klass: str
    command: str
    code: int
    expected: str
    passed: bool
    message: str


class Sweep:
    def __init__(self, root: Path, only: str | None):
        self.root = root
        self.only = only
        self.rows: list[Row] = []
        self.scan = _base(SCAN, 2)
        self.labels = _base(LABELS, 2)
        self.label_map = _base(LABEL_MAP, 2)
        self.model = make_model("valid", root / "models" / "good")
        self.gt = _save(root / "gt" / "case_hipp.nii.gz", *self.labels)
        self.good_cases = [
            (_save(root / "good" / f"img{i}.nii.gz", *self.scan),
             _save(root / "good" / f"lab{i}.nii.gz", *self.labels))
            for i in range(2)
        ]  # fmt: skip
        self.spare_scan = _save(root / "good" / "spare.nii.gz", *self.scan)

    def check(self, klass: str, command: str, args: list, expected: str, status_of=None) -> None:
        if self.only and self.only not in f"{klass} {command}":
            return
        outcome = run(args)
        passed, message = judge(outcome, expected, status_of)
        self.rows.append(Row(klass, command, outcome.code, expected, passed, message))

    def verify(self, klass: str, command: str, args: list, code: int, check=None) -> None:
        """Run, then judge by the exit code (2: exactly one ``error:`` line) and ``check``
        (outcome -> problem or None): a wrong result that exits as if right is a WRONG ANSWER.
        Rows named ``round2:setup`` always run (the classes after them need their outputs)."""
        if self.only and self.only not in f"{klass} {command} round2" and klass != "round2:setup":
            return
        outcome = run(args)
        expected = {0: "ok", 1: "some failed", 2: "error"}[code]
        message = outcome.error_lines[0] if outcome.error_lines else "done"
        if outcome.traceback:
            passed, message = judge(outcome, expected, None)
        elif outcome.code != code:
            kind = "UNEXPECTED SUCCESS" if outcome.code == 0 else f"WRONG EXIT {outcome.code}"
            passed, message = False, f"{kind}: {(outcome.err.strip() or outcome.out)[-200:]}"
        elif code == 2 and len(outcome.error_lines) != 1:
            passed, message = False, f"NOT ONE LINE: {outcome.err.strip()[-200:]}"
        else:
            problem = check(outcome) if check else None
            passed = problem is None
            message = message if passed else f"WRONG ANSWER {problem}"
        self.rows.append(Row(klass, command, outcome.code, expected, passed, message))

    # commands on one input class
    def predict_args(self, inputs, out: Path, *extra) -> list:
        return ["predict", *inputs, "-o", out, "--model", self.model, "--device", "cpu",
                "--quiet", "--no-qc", *extra]  # fmt: skip

    def train_args(self, data, out: Path, *extra) -> list:
        return ["train", *data, "--out", out, "--iterations", "1", "--patch", "16", "--batch",
                "2", "--n-filters", str(N_FILTERS), "--device", "cpu", "--num-workers", "0",
                "--val-every", "1", "--no-amp", *extra]  # fmt: skip

    def image_class(self, klass: str, expected: tuple[str, ...]) -> None:
        base = self.root / "classes" / klass
        scan = make_input(klass, *self.scan, base / "scan")
        label = make_input(klass, *self.labels, base / "label")
        label_map = make_input(klass, *self.label_map, base / "label_map")
        out = base / "out"
        given = scan.parent if klass == "hipp_named" else scan  # item 7: through a folder

        def status() -> str:
            rows = list(csv.DictReader(open(out / "predict" / "volumes.csv")))
            return rows[0]["status"] if rows else ""

        self.check(klass, "predict", self.predict_args([given], out / "predict"), expected[0],
                   status)  # fmt: skip
        self.check(klass, "view", ["view", scan, "-o", out / "view.nii.gz"], expected[1])
        self.check(klass, "evaluate", ["evaluate", label, self.gt, "-o", out / "eval"], expected[2])
        table = base / "train.csv"
        table.parent.mkdir(parents=True, exist_ok=True)
        with open(table, "w") as fh:
            fh.write("image,label\n")
            for img, lab in self.good_cases:
                fh.write(f"{img},{lab}\n")
            if klass in LABEL_CLASSES:  # bad label values: a good scan with the bad label map
                fh.write(f"{self.spare_scan},{label}\n")
            else:  # the class as a scan, with a label map on its own grid
                fh.write(f"{scan},{self._train_label(scan, base)}\n")
        self.check(klass, "train", self.train_args([table], out / "runs"), expected[3])
        maps = label_map.parent
        synth = ["synth", "--label-maps", maps if label_map.exists() else label_map, "--n", "1",
                 "--out", out / "synth", "--size", "32", "32", "32", "--device", "cpu"]  # fmt: skip
        self.check(klass, "synth", synth, expected[4])

    def _train_label(self, scan: Path, base: Path) -> Path:
        """A label map on the scan's own grid (all background with one small blob per side)."""
        try:
            img = nib.load(str(scan))
            shape = img.shape[:3]
            if len(img.shape) not in (3, 4) or min(shape) < 1:
                raise ValueError
        except Exception:  # unreadable: pair it with the good labels
            return self.good_cases[0][1]
        lab = np.zeros(shape, np.uint8)
        c = [s // 2 for s in shape]
        lab[: max(c[0], 1), c[1], c[2]] = 1
        lab[c[0] :, c[1], c[2]] = 2
        out = base / "train_label.nii.gz"
        labimg = nib.Nifti1Image(lab, img.affine, header=img.header if isinstance(
            img, nib.Nifti1Image) else None)  # fmt: skip
        labimg.set_data_dtype(np.uint8)
        nib.save(labimg, str(out))
        return out

    def model_class(self, kind: str, expected: tuple[str, str]) -> None:
        model = make_model(kind, self.root / "models" / kind)
        scan = self.good_cases[0][0]
        out = self.root / "models" / kind / "out"
        args = ["predict", scan, "-o", out / "predict", "--model", model, "--device", "cpu",
                "--quiet", "--no-qc"]  # fmt: skip
        self.check(f"model:{kind}", "predict --model", args, expected[0])
        table = self.root / "models" / "train.csv"
        table.write_text("image,label\n" + "".join(f"{i},{lab}\n" for i, lab in self.good_cases))
        init = self.train_args([table], out / "runs", "--init1", model)
        self.check(f"model:{kind}", "train --init1", init, expected[1])
        if kind in ("foreign_weights", "text_file", "hostile_object"):
            plain = self.root / "models" / "plain.pth"
            torch.save(build_vnet(ModelSpec(n_filters=N_FILTERS)).state_dict(), plain)
            args = ["predict", scan, "-o", out / "released", "--checkpoint1", model,
                    "--checkpoint2", plain, "--device", "cpu", "--quiet"]  # fmt: skip
            self.check(f"model:{kind}", "predict --checkpoint1", args, "error")

    def option_classes(self) -> None:
        scan = self.good_cases[0][0]
        out = self.root / "options"
        table = self.root / "models" / "train.csv"
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_text("image,label\n" + "".join(f"{i},{lab}\n" for i, lab in self.good_cases))
        predict_bad = {
            "--threads -1": ["--threads", "-1"], "--threads 0": ["--threads", "0"],
            "--threshold 2": ["--threshold", "2"], "--overlap 1.5": ["--overlap", "1.5"],
            "--roi-size 0": ["--roi-size", "0"], "--roi-size 17": ["--roi-size", "17"],
            "--shard 3/2": ["--shard", "3/2"], "--shard x": ["--shard", "x"],
            "--grid coarse": ["--grid", "coarse"], "--grid 0": ["--grid", "0"],
            "--family pd": ["--family", "pd"], "--family ''": ["--family", ""],
        }  # fmt: skip
        for name, extra in predict_bad.items():
            self.check(f"option:{name}", "predict",
                       self.predict_args([scan], out / "p", *extra), "error")  # fmt: skip
        self.check("option:(none)", "predict", self.predict_args([scan], out / "p"), "ok")
        train_bad = {
            "--num-workers -1": ["--num-workers", "-1"], "--n-filters 0": ["--n-filters", "0"],
            "--name ../escape": ["--name", "../escape"], "--name /abs": ["--name", "/tmp/x"],
            "--patch 17": ["--patch", "17"], "--iterations 0": ["--iterations", "0"],
            "--batch 0": ["--batch", "0"], "--lr nan": ["--lr", "nan"],
            "--init-family t1 (no --init1)": ["--init-family", "t1"],
        }  # fmt: skip
        for name, extra in train_bad.items():
            self.check(f"option:{name}", "train",
                       self.train_args([table], out / "runs", *extra), "error")  # fmt: skip
        self.check("option:--n 0", "synth", ["synth", "--n", "0", "--out", out / "s"], "error")
        zero = ["synth", "--n", "1", "--out", out / "s", "--size", "0", "0", "0"]
        self.check("option:--size 0 0 0", "synth", zero, "error")
        self.check("option:--cutoff 2", "view",
                   ["view", scan, "-o", out / "v.nii.gz", "--cutoff", "2"], "error")  # fmt: skip
        self.check("option:-o not NIfTI", "view", ["view", scan, "-o", out / "v.txt"], "error")
        self.check("option:--labels x", "evaluate",
                   ["evaluate", self.gt, self.gt, "--labels", "x"], "error")  # fmt: skip
        self.check("option:(no INPUTS)", "predict", ["predict"], "error")
        self.check("option:unknown option", "predict", ["predict", scan, "--frobnicate"], "error")

    def resume_classes(self) -> None:
        if self.only and self.only not in "resume train --resume":
            return
        table = self.root / "models" / "train.csv"
        runs = self.root / "resume"
        first = run(self.train_args([table], runs, "--name", "r", "--iterations", "2"))
        if first.code != 0:
            self.rows.append(Row("resume:setup", "train", first.code, "ok", False,
                                 first.err.strip()[-200:]))  # fmt: skip
            return
        run_dir = runs / "r"
        config = (run_dir / "config.json").read_bytes()
        for name, extra in {
            "--lr": ["--lr", "0.5"], "--patch": ["--patch", "32"], "--batch": ["--batch", "4"],
            "--n-filters": ["--n-filters", "8"], "DATA": [str(table)], "--seed": ["--seed", "3"],
        }.items():  # fmt: skip
            self.check(f"resume:{name}", "train --resume",
                       ["train", "--resume", run_dir, *extra], "error")  # fmt: skip
        last = run_dir / "checkpoints" / "last.pt"
        saved = last.read_bytes()
        last.write_bytes(saved[: len(saved) // 2])
        self.check("resume:truncated last.pt", "train --resume",
                   ["train", "--resume", run_dir, "--iterations", "3"], "error")  # fmt: skip
        last.write_bytes(saved)
        same = (run_dir / "config.json").read_bytes() == config
        self.rows.append(Row("resume:config.json kept", "train --resume", 0, "ok", same,
                             "unchanged" if same else "REWRITTEN by a failed resume"))  # fmt: skip
        self.check(
            "resume:--iterations 3",
            "train --resume",
            ["train", "--resume", run_dir, "--iterations", "3", "--num-workers", "0"],
            "ok",
        )
        iterations = [r["iteration"] for r in csv.DictReader(open(run_dir / "metrics.csv"))]
        unique = len(iterations) == len(set(iterations))
        self.rows.append(Row("resume:metrics rows unique", "train --resume", 0, "ok", unique,
                             ",".join(iterations)))  # fmt: skip

    def output_classes(self) -> None:
        blocker = self.root / "a_file"
        blocker.write_text("not a folder")
        scan, lab = self.good_cases[0]
        table = self.root / "models" / "train.csv"
        for where, bad in (("under a file", blocker / "out"), ("/proc", Path("/proc/lofi_out"))):
            self.check(f"output:{where}", "predict", self.predict_args([scan], bad), "error")
            self.check(f"output:{where}", "evaluate", ["evaluate", lab, lab, "-o", bad], "error")
            self.check(f"output:{where}", "view", ["view", scan, "-o", bad / "v.nii.gz"], "error")
            synth = ["synth", "--n", "1", "--out", bad, "--size", "32", "32", "32"]
            self.check(f"output:{where}", "synth", synth, "error")
            self.check(f"output:{where}", "train", self.train_args([table], bad), "error")

    def dicom_classes(self) -> None:
        """Issue 42: DICOM series (written with pydicom from the example scan at 4 mm), good
        and bad, alone and in one batch; no class may write into its input folder."""
        try:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            import pydicom
            from dicom_fixtures import Study, oblique_affine, write_enhanced, write_series
        except ImportError:
            print("dicom classes skipped: the [dicom] extra (pydicom) is not installed")
            return
        data, affine = _base(SCAN, 2)
        study = Study()
        base = self.root / "dicom"

        def series(name: str, **kwargs) -> Path:
            folder = base / name / "in"
            kwargs.setdefault("study", study)
            write_series(folder / "s", data, kwargs.pop("affine", affine), **kwargs)
            return folder

        def retag(folder: Path, **values) -> Path:
            for i, f in enumerate(sorted((folder / "s").iterdir())):
                ds = pydicom.dcmread(f)
                for key, value in values.items():
                    if key != "StudyInstanceUID" or i % 2:
                        setattr(ds, key, value)
                ds.save_as(f)
            return folder

        enhanced = base / "enhanced" / "in"
        write_enhanced(enhanced / "frames.dcm", data, affine, study=study)
        empty = base / "no_dicom" / "in"
        empty.mkdir(parents=True)
        (empty / "readme.txt").write_text("no images")
        cases = {  # class -> (inputs, extra options, exit code, error words)
            "good+seg": ([series("good", number=3)], ["--dicom-seg"], 0, ""),
            "oblique": ([series("oblique", affine=oblique_affine((4, 4, 4), data.shape))],
                        ["--dicom-seg"], 0, ""),
            "lps": ([series("lps", affine=affine @ np.diag([-1, 1, 1, 1.0]))], [], 0, ""),
            "enhanced": ([enhanced], ["--dicom-seg"], 0, ""),
            "no_dicom": ([empty], [], 2, "no NIfTI/MGZ images"),
            "missing_slice": ([series("gap", skip_slices=(9,))], [], 2, "a missing slice"),
            "no_pixels": ([series("nopix", pixels=False)], [], 2, "without pixel data"),
            "mixed_studies": ([retag(series("mixed"), StudyInstanceUID="1.2.3.4")], [], 2,
                              "2 different studies"),
            "dcm2niix_refuses": ([retag(series("bits"), BitsAllocated=32, BitsStored=32,
                                        HighBit=31)], [], 2, "dcm2niix could not convert"),
            "localiser_only": ([series("loc", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))],
                               [], 2, "no series to segment"),
            "seg_without_dicom": ([self.spare_scan], ["--dicom-seg"], 2, "needs DICOM input"),
        }  # fmt: skip
        flat = base / "flat" / "in"
        write_series(flat / "s", data[:, :, :1], affine, study=study)
        cases["2d_series"] = ([flat], [], 2, "no series to segment")
        other = Study()
        two = base / "two_studies" / "in"
        write_series(two / "a", data, affine, 3, "T2 AXI", study)
        write_series(two / "b", data.transpose(0, 2, 1), affine[:, [0, 2, 1, 3]], 4, "COR", other)
        cases["stacks_two_studies"] = ([two], ["--stacks"], 2, "different studies")
        batch = [cases[k][0][0] for k in ("good+seg", "missing_slice", "no_pixels", "no_dicom")]
        cases["batch_goes_on"] = (batch, ["--dicom-seg"], 1, "")
        for klass, (inputs, extra, code, words) in cases.items():
            out = base / klass.replace("+", "_") / "out"
            before = {p: p.stat().st_mtime_ns for i in inputs for p in Path(i).rglob("*")}

            def check(outcome: Outcome, inputs=inputs, words=words, out=out, before=before,
                      extra=extra, klass=klass):  # fmt: skip
                after = {p: p.stat().st_mtime_ns for i in inputs for p in Path(i).rglob("*")}
                if after != before:
                    return "wrote into the input folder"
                if words and words not in "".join(outcome.error_lines):
                    return f"no {words!r} in {outcome.error_lines}"
                if klass == "batch_goes_on" and len(outcome.error_lines) != 3:
                    return f"{len(outcome.error_lines)} error lines, expected 3"
                if "--dicom-seg" in extra and outcome.code in (0, 1):
                    if not list(out.glob("*_seg.dcm")) or not list(out.glob("*_sr.dcm")):
                        return "no SEG/SR written"
                return None

            self.verify(f"dicom:{klass}", "predict", self.predict_args(inputs, out, *extra),
                        code, check)  # fmt: skip

    def run_all(self) -> None:
        for klass, expected in IMAGE_CLASSES.items():
            self.image_class(klass, expected)
        for kind, expected in MODEL_CLASSES.items():
            self.model_class(kind, expected)
        self.option_classes()
        self.resume_classes()
        self.output_classes()
        self.dicom_classes()
        Round2(self).run_all()  # issue 20: annexed files, cohort edge cases, grids, fine voxels


def print_table(rows: list[Row]) -> None:
    print(f"{'class':<28} {'command':<22} {'exit':>4} {'expected':<22} verdict  message")
    for r in rows:
        message = r.message.replace("\n", " ")
        message = message if len(message) <= 150 else message[:147] + "..."
        verdict = "pass" if r.passed else "FAIL"
        print(f"{r.klass[:28]:<28} {r.command:<22} {r.code:>4} {r.expected:<22} {verdict:<8} "
              f"{message}")  # fmt: skip


def main_sweep() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the inputs here.")
    parser.add_argument("--only", default=None, help="Only classes/commands containing this.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="lofi_sweep_"))
    start = time.time()
    try:
        sweep = Sweep(root, args.only)
        sweep.run_all()
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print_table(sweep.rows)
    failed = [r for r in sweep.rows if not r.passed]
    tracebacks = sum(r.message.startswith("TRACEBACK") for r in failed)
    unexpected_ok = sum(r.message.startswith("UNEXPECTED SUCCESS") for r in failed)
    wrong = sum(r.message.startswith("WRONG ANSWER") for r in failed)
    print(
        f"\n{len(sweep.rows)} cases ({len({r.klass for r in sweep.rows})} input classes), "
        f"{len(sweep.rows) - len(failed)} pass, {len(failed)} fail "
        f"({tracebacks} tracebacks, {unexpected_ok + wrong} silent wrong answers: "
        f"{unexpected_ok} unexpected successes, {wrong} wrong answers); "
        f"{time.time() - start:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_sweep())
