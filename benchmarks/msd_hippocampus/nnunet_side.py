"""The nnU-Net v2 side of the MSD hippocampus benchmark.

nnU-Net runs in its own virtual environment (``.nnunet-venv`` beside this file, git-ignored), made
by :func:`ensure_venv`; it is never a dependency of ``lofihippseg``. The same torch version as the
calling environment is pinned (as a pip constraint) so that pip reuses a local CPU wheel where one
is available instead of pulling a multi-GB CUDA build, and nnU-Net's ``torchvision`` (needed only
by ``timm`` paths nnU-Net does not use) is removed if it cannot be imported with that torch.

Every nnU-Net step is run through nnU-Net's own command-line tools, with ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` pointing into the benchmark's work folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".nnunet-venv"
TRAINER = "nnUNetTrainer_TimeBudget"
DATASET_ID = 904
DATASET_NAME = f"Dataset{DATASET_ID:03d}_MSDHippocampusSplit"


@dataclass
class NnunetRun:
    """What one nnU-Net run produced and how long each step took (seconds)."""

    pred_dir: Path
    trainer: str
    preprocess_s: float
    train_s: float
    predict_s: float
    n_test: int
    log: str = ""


def _bin(venv: Path, name: str) -> Path:
    return venv / "bin" / name


def ensure_venv(venv: Path = DEFAULT_VENV, log=print) -> Path:
    """Create ``venv`` with nnunetv2 installed (once); return its python.

    Example:
        >>> python = ensure_venv()  # doctest: +SKIP
    """
    python = _bin(venv, "python")
    if python.exists() and _run_ok([str(python), "-c", "import nnunetv2"]):
        install_trainer(python)
        return python
    import torch  # the calling environment's torch: pin the same version in nnU-Net's venv

    torch_version = torch.__version__.split("+")[0]
    log(f"[nnunet] creating {venv} (torch=={torch_version} pinned, then nnunetv2 from PyPI)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"torch=={torch_version}"], check=True)
    constraints = venv / "constraints.txt"
    constraints.write_text(f"torch=={torch_version}\n")
    subprocess.run([*pip, "-c", str(constraints), "nnunetv2"], check=True)
    if not _run_ok([str(python), "-c", "import torchvision"]):
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision"])
    install_trainer(python)
    return python


def install_trainer(python: Path) -> Path:
    """Copy the budgeted trainer into nnU-Net's trainer folder (where nnU-Net looks it up)."""
    out = subprocess.run(
        [str(python), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
        check=True,
        capture_output=True,
        text=True,
    )
    target = Path(out.stdout.strip()) / "training" / "nnUNetTrainer" / f"{TRAINER}.py"
    src = HERE / "nnunet_trainer_plugin.py"
    if not target.exists() or target.read_bytes() != src.read_bytes():
        shutil.copyfile(src, target)
    return target


def _run_ok(cmd: list[str]) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    os.symlink(src.resolve(), dst)


def write_raw_dataset(raw_root: Path, train: list, test: list) -> Path:
    """An nnU-Net raw dataset of the split (symbolic links to the original files).

    ``train``/``test`` hold objects with ``case_id``, ``image`` and ``label`` (paths). Training
    cases (our train + validation lists) go to imagesTr/labelsTr, test images to imagesTs.
    """
    root = raw_root / DATASET_NAME
    if root.exists():
        shutil.rmtree(root)
    for case in train:
        _link(case.image, root / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        _link(case.label, root / "labelsTr" / f"{case.case_id}.nii.gz")
    for case in test:
        _link(case.image, root / "imagesTs" / f"{case.case_id}_0000.nii.gz")
    description = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": len(train),
        "file_ending": ".nii.gz",
        "name": DATASET_NAME,
        "description": "MSD Task04 hippocampus, the lofihippseg benchmark's fixed split",
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2))
    return root


def nnunet_env(work: Path, budget_minutes: float | None, iters_per_epoch: int, val_iters: int):
    """Environment for nnU-Net's tools: data folders, no compile, the budget.

    ``nnUNet_n_proc_DA`` is 1 here (planning calls ``torch.set_num_threads`` with it, so 0 fails);
    training overrides it with 0 (augmentation in the main process; set the variable yourself
    to use worker processes on a bigger machine).
    """
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(work / "nnUNet_raw"),
        nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
        nnUNet_results=str(work / "nnUNet_results"),
        nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "1"),
        nnUNet_compile=env.get("nnUNet_compile", "f"),
        LOFI_NNUNET_ITERS_PER_EPOCH=str(iters_per_epoch),
        LOFI_NNUNET_VAL_ITERS=str(val_iters),
    )
    env.pop("VIRTUAL_ENV", None)
    if budget_minutes is not None:
        env["LOFI_NNUNET_BUDGET_MINUTES"] = str(budget_minutes)
    return env


def _timed(cmd: list[str], env: dict, log_path: Path, log=print, **extra: str) -> float:
    log(f"[nnunet] $ {' '.join(cmd)}")
    env = {**env, **extra}
    start = time.perf_counter()
    with open(log_path, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        result = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"nnU-Net step failed ({cmd[0]}), see {log_path}:\n{tail}")
    return seconds


def run_nnunet(
    work: Path,
    train: list,
    test: list,
    budget_minutes: float | None,
    device: str = "cpu",
    venv: Path = DEFAULT_VENV,
    full_schedule: bool = False,
    iters_per_epoch: int = 25,
    val_iters: int = 5,
    log=print,
) -> NnunetRun:
    """Convert, plan and preprocess, train (fold ``all``) and predict the test cases.

    Args:
        work: folder for nnU-Net's raw/preprocessed/results folders and its predictions.
        budget_minutes: training wall-clock budget (ignored with ``full_schedule``).
        full_schedule: nnU-Net's default trainer and schedule (1000 x 250 iterations; a GPU job).
        iters_per_epoch / val_iters: epoch length of the budgeted trainer.
    """
    python = ensure_venv(venv, log=log)
    bindir = python.parent
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "nnunet.log"
    write_raw_dataset(work / "nnUNet_raw", train, test)
    env = nnunet_env(work, budget_minutes, iters_per_epoch, val_iters)
    trainer = "nnUNetTrainer" if full_schedule else TRAINER
    did = str(DATASET_ID)
    prep = _timed(
        [
            str(bindir / "nnUNetv2_plan_and_preprocess"),
            "-d",
            did,
            "-c",
            "3d_fullres",
            "-np",
            "1",
            "-npfp",
            "1",
            "--verify_dataset_integrity",
            "--no_pbar",
        ],
        env,
        log_path,
        log,
    )
    results = work / "nnUNet_results"
    if results.exists():
        shutil.rmtree(results)  # a fresh training each run (no silent resume)
    train_s = _timed(
        [
            str(bindir / "nnUNetv2_train"),
            did,
            "3d_fullres",
            "all",
            "-tr",
            trainer,
            "-device",
            device,
        ],
        env,
        log_path,
        log,
        nnUNet_n_proc_DA=os.environ.get("nnUNet_n_proc_DA", "0"),
    )
    pred_dir = work / "predictions"
    if pred_dir.exists():
        shutil.rmtree(pred_dir)
    predict_s = _timed(
        [
            str(bindir / "nnUNetv2_predict"),
            "-i",
            str(work / "nnUNet_raw" / DATASET_NAME / "imagesTs"),
            "-o",
            str(pred_dir),
            "-d",
            did,
            "-c",
            "3d_fullres",
            "-f",
            "all",
            "-tr",
            trainer,
            "-device",
            device,
            "-npp",
            "1",
            "-nps",
            "1",
            "--disable_progress_bar",
        ],
        env,
        log_path,
        log,
    )
    return NnunetRun(pred_dir, trainer, prep, train_s, predict_s, len(test), str(log_path))


def training_log_summary(work: Path) -> str:
    """The budget lines nnU-Net's training log printed (epochs done, s/epoch, it/s)."""
    lines: list[str] = []
    for path in sorted((work / "nnUNet_results").rglob("training_log_*.txt")):
        lines += [ln.strip() for ln in path.read_text().splitlines() if "budget:" in ln]
    return "\n".join(lines[-3:])
