"""Check the LoFiHippSeg image in a real container runtime (podman or docker).

Builds the image with container/build.sh when it is missing (``--build``), then, in a scratch
folder:

- makes a tiny BIDS dataset (sub-01: the shipped synthetic example; sub-02 ses-1: the same scan
  stored in another voxel order; sub-02 ses-2: a truncated, broken scan) and mounts it
  read-only;
- runs the BIDS App in the image (participant, then group) and the same commands outside it
  (this Python's ``lofihippseg``), and checks on the host: every label map on its input's grid
  (shape and affine), the same labels as outside, sidecars, figures, volumes TSVs,
  ``group_volumes.tsv`` and ``report.html``, every output file owned by the calling user, the
  input dataset untouched (SHA-256, size, mode and mtime of every file) and the same exit codes
  as outside (participant with a broken scan: 1; a bad ``predict`` input: 2; a usage error: 2);
- runs ``lofihippseg predict`` on the shipped example in the image and outside it, ``--repeats``
  times each, alternately, and reports the median wall times (the container's start included);
- writes the example as a DICOM series and runs ``predict FOLDER --dicom-seg`` inside and
  outside: one SEG and one SR, the same volumes, the DICOM folder untouched.

Prints the figures and writes them as JSON (``--json``); exit code 0 when every check passed,
1 when some failed, 2 when no runtime or no image was there to check.

    .venv/bin/python container/check_container.py --build --json /tmp/lofi-container/check.json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = REPO / "src/lofihippseg/data/examples/synthetic_lowfield_example.nii.gz"


def version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise RuntimeError("no version in pyproject.toml")


DEFAULT_IMAGE = f"lofihippseg:{version()}"


# ---- the runtime ---------------------------------------------------------------------------
def detect_engine() -> str | None:
    """podman when installed, else docker when its daemon answers, else None."""
    if shutil.which("podman"):
        return "podman"
    if shutil.which("docker"):
        ok = subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
        if ok:
            return "docker"
    return None


def runtime_options(engine: str) -> list[str]:
    """CONTAINER_RUN_OPTS, else for podman with runc (these machines): runc and low ulimits."""
    if "CONTAINER_RUN_OPTS" in os.environ:
        return os.environ["CONTAINER_RUN_OPTS"].split()
    if engine == "podman" and shutil.which("runc"):
        return ["--runtime", "runc", "--ulimit", "nofile=1024:4096", "--ulimit", "nproc=1024:2048"]
    return []


def user_options(engine: str) -> list[str]:
    """Run as the calling user, by number; rootless podman also maps it to itself (keep-id)."""
    user = ["--user", f"{os.getuid()}:{os.getgid()}"]
    if engine == "podman" and os.getuid() != 0:
        return ["--userns", "keep-id", *user]
    return user


def image_exists(engine: str, image: str) -> bool:
    cmd = [engine, "image", "inspect", image]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def image_size_bytes(engine: str, image: str) -> int:
    out = subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def build(engine: str, image: str) -> float:
    """container/build.sh; returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(
        [str(HERE / "build.sh"), "--engine", engine, "--tag", image], check=True, cwd=REPO
    )
    return time.perf_counter() - start


class Runner:
    """Runs lofihippseg commands in the image and outside it, with the same arguments."""

    def __init__(self, engine: str, image: str, host_cli: str, mounts: dict[Path, str]):
        self.engine, self.image, self.host_cli = engine, image, host_cli
        self.mounts = mounts  # host folder -> "/bids:ro" style target in the container

    def _to_container(self, arg: str) -> str:
        for host, target in self.mounts.items():
            prefix = str(host)
            if arg == prefix or arg.startswith(prefix + "/"):
                return target.split(":")[0] + arg[len(prefix) :]
        return arg

    def inside(self, *args: str, entry: bool = False) -> tuple[subprocess.CompletedProcess, float]:
        """``entry``: the arguments go to the image's entry point (the BIDS App) as they are."""
        volumes = [f"-v={host}:{target}" for host, target in self.mounts.items()]
        cmd = [
            self.engine,
            "run",
            "--rm",
            "--network",
            "none",
            *runtime_options(self.engine),
            *user_options(self.engine),
            *volumes,
            self.image,
            *([] if entry else ["lofihippseg"]),
            *(self._to_container(a) for a in args),
        ]
        return _timed(cmd)

    def outside(self, *args: str, entry: bool = False) -> tuple[subprocess.CompletedProcess, float]:
        return _timed([self.host_cli, *(["bids"] if entry else []), *args])


def _timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc, time.perf_counter() - start


# ---- the data ------------------------------------------------------------------------------
def make_bids(root: Path) -> dict[str, Path]:
    """A tiny BIDS dataset; returns its images by role (good ones, and the broken one)."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "container check", "BIDSVersion": "1.9.0"})
    )
    sub01 = root / "sub-01/anat/sub-01_T2w.nii.gz"
    sub01.parent.mkdir(parents=True)
    shutil.copyfile(EXAMPLE, sub01)
    (root / "sub-01/anat/sub-01_T2w.json").write_text('{"MagneticFieldStrength": 0.064}\n')
    # the same head stored in another voxel order (PSR-like): the labels must follow the grid
    img = nib.load(EXAMPLE)
    other = img.as_reoriented(np.array([[1, -1], [2, 1], [0, -1]]))
    sub02 = root / "sub-02/ses-1/anat/sub-02_ses-1_acq-lowfield_T2w.nii.gz"
    sub02.parent.mkdir(parents=True)
    nib.save(other, sub02)
    broken = root / "sub-02/ses-2/anat/sub-02_ses-2_acq-lowfield_T2w.nii.gz"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(gzip.compress(sub02.read_bytes())[:300])  # truncated gzip
    return {"sub-01": sub01, "sub-02_ses-1": sub02, "broken": broken}


def fingerprint(root: Path) -> dict[str, tuple]:
    """SHA-256, size, mode and mtime of every file and folder under root."""
    prints = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        prints[str(path.relative_to(root))] = (digest, st.st_size, st.st_mode, st.st_mtime_ns)
    st = root.lstat()
    prints["."] = (None, None, st.st_mode, st.st_mtime_ns)
    return prints


def foreign_owned(root: Path) -> list[str]:
    """Paths under root not owned by the calling user and group."""
    uid, gid = os.getuid(), os.getgid()
    return [
        f"{p} ({p.lstat().st_uid}:{p.lstat().st_gid})"
        for p in [root, *root.rglob("*")]
        if (p.lstat().st_uid, p.lstat().st_gid) != (uid, gid)
    ]


# ---- the checks ----------------------------------------------------------------------------
class Checks:
    def __init__(self, verbose: bool = True):
        self.failures: list[str] = []
        self.passed: list[str] = []
        self.verbose = verbose

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        (self.passed if ok else self.failures).append(what + ("" if ok else f": {detail}"))
        if self.verbose:
            print(f"{'ok  ' if ok else 'FAIL'} {what}" + ("" if ok else f": {detail}"))
        return ok

    def label_map(self, label: Path, source: Path, what: str, twin: Path | None = None) -> None:
        """label on source's grid (shape, affine), uint8 0/1/2; equal to twin's data if given."""
        if not self.check(label.is_file(), f"{what}: label map written", str(label)):
            return
        lab, src = nib.load(label), nib.load(source)
        data = np.asarray(lab.dataobj)
        self.check(
            lab.shape == src.shape and np.allclose(lab.affine, src.affine, atol=1e-5),
            f"{what}: label map on the input's grid",
            f"shape {lab.shape} vs {src.shape}, affine\n{lab.affine}\nvs\n{src.affine}",
        )
        self.check(
            data.dtype == np.uint8
            and set(np.unique(data)) <= {0, 1, 2}
            and {1, 2} <= set(np.unique(data)),
            f"{what}: uint8 labels 0/1/2, both sides found",
            f"{data.dtype} {np.unique(data)}",
        )
        if twin is not None and twin.is_file():
            same = np.array_equal(data, np.asarray(nib.load(twin).dataobj))
            self.check(same, f"{what}: same labels as outside the container", str(twin))

    def exit_codes(
        self,
        what: str,
        inside: subprocess.CompletedProcess,
        outside: subprocess.CompletedProcess,
        expected: int,
    ) -> None:
        self.check(
            inside.returncode == outside.returncode == expected,
            f"{what}: exit code {expected} inside and outside",
            f"inside {inside.returncode}, outside {outside.returncode}\n"
            f"inside stderr: {inside.stderr[-1500:]}\noutside stderr: {outside.stderr[-1500:]}",
        )


def dseg_for(out: Path, bids: Path, image: Path) -> Path:
    """The BIDS App's label map of a raw image: same folders, _T2w -> _space-orig_desc-..."""
    stem = image.name.replace(".nii.gz", "").rsplit("_", 1)[0]
    folder = out / image.parent.relative_to(bids)
    return folder / f"{stem}_space-orig_desc-hippocampus_dseg.nii.gz"


def make_dicom(folder: Path) -> Path | None:
    """The shipped example written as a classic MR DICOM series (None without pydicom)."""
    try:
        import nibabel as nib
        import numpy as np

        sys.path.insert(0, str(REPO / "tests"))
        from dicom_fixtures import write_series
    except ImportError:
        return None
    img = nib.as_closest_canonical(nib.load(EXAMPLE))
    write_series(folder / "series3", np.asarray(img.dataobj, dtype=np.float32), img.affine)
    return folder


def _volume_rows(csv_path: Path) -> list[list[str]]:
    """``volumes.csv``'s rows without paths and times (what must agree inside and outside)."""
    if not csv_path.is_file():
        return []
    lines = csv_path.read_text().splitlines()
    head = lines[0].split(",")
    keep = [i for i, h in enumerate(head) if h.endswith("_ml") or h in ("case", "status")]
    return [[r.split(",")[i] for i in keep] for r in lines[1:]]


def run_checks(
    engine: str, image: str, work: Path, host_cli: str, repeats: int = 3, verbose: bool = True
) -> dict:
    """Every check; returns {"failures": [...], "passed": [...], "figures": {...}}."""
    checks = Checks(verbose)
    figures: dict = {
        "engine": engine,
        "image": image,
        "image_size_mb": round(image_size_bytes(engine, image) / 1e6),
    }
    bids = work / "bids"
    images = make_bids(bids)
    out_in, out_out = work / "out_container", work / "out_host"
    pred_in, pred_out = work / "predict_container", work / "predict_host"
    for folder in (out_in, out_out, pred_in, pred_out):
        folder.mkdir()
    before = fingerprint(bids)
    inside = Runner(
        engine,
        image,
        host_cli,
        {bids: "/bids:ro", out_in: "/out", pred_in: "/pred", EXAMPLE.parent: "/in:ro"},
    )

    # the BIDS App: participant (one broken scan: exit code 1, the rest done), then group
    p_in, t_in = inside.inside(str(bids), str(out_in), "participant", "--quiet", entry=True)
    p_out, t_out = inside.outside(str(bids), str(out_out), "participant", "--quiet", entry=True)
    figures["participant_s"] = {"container": round(t_in, 1), "host": round(t_out, 1)}
    checks.exit_codes("participant with a broken scan", p_in, p_out, 1)
    for name in ("sub-01", "sub-02_ses-1"):
        label = dseg_for(out_in, bids, images[name])
        checks.label_map(
            label, images[name], f"bids {name}", twin=dseg_for(out_out, bids, images[name])
        )
        sidecar = Path(str(label).replace(".nii.gz", ".json"))
        checks.check(sidecar.is_file(), f"bids {name}: JSON sidecar", str(sidecar))
    figs = sorted(p.name for p in out_in.glob("sub-*/figures/*.png"))
    checks.check(len(figs) == 2, "bids: two QC figures", str(figs))
    tsvs = sorted(p.name for p in out_in.glob("sub-*/sub-*_desc-hippocampus_volumes.tsv"))
    checks.check(len(tsvs) == 2, "bids: a volumes TSV per participant", str(tsvs))
    checks.check((out_in / "dataset_description.json").is_file(), "bids: dataset_description")
    failed = list((out_in / "logs").glob("*failed.json"))
    checks.check(len(failed) == 1, "bids: the broken scan logged as failed", str(failed))

    g_in, _ = inside.inside(str(bids), str(out_in), "group", entry=True)
    g_out, _ = inside.outside(str(bids), str(out_out), "group", entry=True)
    checks.exit_codes("group", g_in, g_out, g_out.returncode)
    table = out_in / "group_volumes.tsv"
    rows = table.read_text().splitlines()[1:] if table.is_file() else []
    checks.check(
        len(rows) >= 2 and (out_in / "report.html").is_file(),
        "group: group_volumes.tsv (2 images at least) and report.html",
        str(rows),
    )
    if (out_out / "group_volumes.tsv").is_file() and rows:
        host_rows = (out_out / "group_volumes.tsv").read_text().splitlines()[1:]
        strip = [[c for c in r.split("\t") if not c.startswith("/")] for r in rows]
        host_strip = [[c for c in r.split("\t") if not c.startswith("/")] for r in host_rows]
        checks.check(
            strip == host_strip,
            "group: same table as outside (paths aside)",
            f"{rows}\nvs\n{host_rows}",
        )

    # usage error and a bad input: the same exit code as outside
    u_in, _ = inside.inside(str(bids), str(out_in), "everyone", entry=True)
    u_out, _ = inside.outside(str(bids), str(out_out), "everyone", entry=True)
    checks.exit_codes("usage error (analysis level 'everyone')", u_in, u_out, 2)
    bad = bids / "sub-02/ses-2/anat/sub-02_ses-2_acq-lowfield_T2w.nii.gz"
    b_in, _ = inside.inside("predict", str(bad), "-o", str(pred_in / "bad"))
    b_out, _ = inside.outside("predict", str(bad), "-o", str(pred_out / "bad"))
    checks.exit_codes("predict on a broken scan", b_in, b_out, 2)
    checks.check(
        "error:" in b_in.stderr and "Traceback" not in b_in.stderr,
        "predict on a broken scan: a one-line error inside, no traceback",
        b_in.stderr[-500:],
    )

    # predict on the shipped example, timed inside and outside, alternately
    times_in, times_out = [], []
    example_in = "/in/" + EXAMPLE.name
    for _ in range(repeats):
        r_in, t = inside.inside("predict", example_in, "-o", str(pred_in), "--overwrite", "--quiet")
        times_in.append(t)
        r_out, t = inside.outside(
            "predict", str(EXAMPLE), "-o", str(pred_out), "--overwrite", "--quiet"
        )
        times_out.append(t)
    checks.exit_codes("predict on the example", r_in, r_out, 0)
    name = EXAMPLE.name.replace(".nii.gz", "")
    checks.label_map(
        pred_in / f"{name}_hipp.nii.gz",
        EXAMPLE,
        "predict example",
        twin=pred_out / f"{name}_hipp.nii.gz",
    )
    for extra in (f"{name}_hipp.json", f"{name}_qc.png", "volumes.csv"):
        checks.check((pred_in / extra).is_file(), f"predict example: {extra}")
    if (pred_in / "volumes.csv").is_file():
        print((pred_in / "volumes.csv").read_text().strip()) if verbose else None
    sidecar_in = pred_in / f"{name}_hipp.json"
    sidecar_out = pred_out / f"{name}_hipp.json"
    if sidecar_in.is_file() and sidecar_out.is_file():
        s_in, s_out = json.loads(sidecar_in.read_text()), json.loads(sidecar_out.read_text())
        checks.check(
            s_in["volumes"] == s_out["volumes"],
            "predict example: same volumes",
            f"{s_in['volumes']} vs {s_out['volumes']}",
        )
        figures["predict_segmentation_s"] = {
            "container": s_in["timings"]["total_s"],
            "host": s_out["timings"]["total_s"],
        }
    figures["predict_wall_s"] = {
        "container": round(statistics.median(times_in), 2),
        "host": round(statistics.median(times_out), 2),
        "repeats": repeats,
        "container_runs": [round(t, 2) for t in times_in],
        "host_runs": [round(t, 2) for t in times_out],
    }
    _, t = inside.inside("--version")
    figures["lofihippseg_version_s"] = {
        "container": round(t, 2),
        "host": round(inside.outside("--version")[1], 2),
    }

    # a DICOM folder (the [dicom] extra in the image): SEG and SR, the same volumes as outside
    dicom = make_dicom(work / "dicom")
    dicom_in, dicom_out = work / "dicom_container", work / "dicom_host"
    if dicom is None:
        checks.check(True, "dicom: skipped (no pydicom on the host to write a series)")
    else:
        dicom_in.mkdir()
        dicom_before = fingerprint(dicom)
        dicom_runner = Runner(engine, image, host_cli, {dicom: "/dicom:ro", dicom_in: "/dout"})
        d_in, _ = dicom_runner.inside("predict", str(dicom), "-o", str(dicom_in), "--dicom-seg")
        d_out, _ = dicom_runner.outside("predict", str(dicom), "-o", str(dicom_out), "--dicom-seg")
        checks.exit_codes("predict on a DICOM folder", d_in, d_out, 0)
        for kind in ("seg", "sr"):
            found = sorted(p.name for p in dicom_in.glob(f"*_{kind}.dcm"))
            checks.check(len(found) == 1, f"dicom: one DICOM {kind.upper()}", str(found))
        rows = [_volume_rows(f / "volumes.csv") for f in (dicom_in, dicom_out)]
        checks.check(rows[0] == rows[1] and bool(rows[0]), "dicom: same volumes as outside",
                     str(rows))  # fmt: skip
        checks.check(fingerprint(dicom) == dicom_before, "dicom: the input folder is untouched")
        pred_folders = (out_in, pred_in, dicom_in)
    # the host's view: ownership, the input untouched
    for folder in (out_in, pred_in) if dicom is None else pred_folders:
        foreign = foreign_owned(folder)
        checks.check(
            not foreign,
            f"{folder.name}: every file owned by the calling user ({os.getuid()}:{os.getgid()})",
            "\n".join(foreign[:10]),
        )
    after = fingerprint(bids)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    checks.check(
        not changed,
        "the input dataset is untouched (checksums, sizes, modes, mtimes)",
        str(changed),
    )
    return {"failures": checks.failures, "passed": checks.passed, "figures": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["podman", "docker"], help="default: detected")
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument(
        "--build",
        action="store_true",
        help="build the image with container/build.sh when it is missing",
    )
    parser.add_argument("--rebuild", action="store_true", help="build it even if it exists")
    parser.add_argument("--repeats", type=int, default=3, help="timed predict runs (each side)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--host-lofihippseg", default=str(Path(sys.executable).parent / "lofihippseg")
    )
    parser.add_argument("--json", type=Path, help="write the figures and results here")
    args = parser.parse_args(argv)

    engine = args.engine or detect_engine()
    if engine is None:
        print("no container runtime (podman, or docker with a running daemon)", file=sys.stderr)
        return 2
    figures_build = {}
    if args.rebuild or (args.build and not image_exists(engine, args.image)):
        figures_build["build_s"] = round(build(engine, args.image))
    if not image_exists(engine, args.image):
        print(f"no image {args.image}: run container/build.sh (or pass --build)", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="lofi-container-check-"))
    if args.work:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
    result = run_checks(engine, args.image, work, args.host_lofihippseg, args.repeats)
    result["figures"].update(figures_build)
    print(json.dumps(result["figures"], indent=1))
    print(
        f"{len(result['passed'])} checks passed, {len(result['failures'])} failed; "
        f"outputs in {work}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
