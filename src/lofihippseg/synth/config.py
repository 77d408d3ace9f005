"""Every parameter range of the synthetic low-field generator, in one dataclass.

Ranges are starting points taken from ``../shared/docs/LOWFIELD.md`` (which gathers them from the
Hyperfine protocol, the LISA challenge material, SynthSeg, SynthSR and ULF-Synth); the comment on
each field says where it comes from. Intensities are in relative units (CSF about 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

Range = tuple[float, float]

# FreeSurfer label -> tissue class (FreeSurferColorLUT numbering). Unlisted labels (SynthSeg's
# extra-cerebral clusters 136-530, lesions, vessels) are "other" and get a random intensity.
TISSUE_OF_LABEL: dict[int, str] = {
    **dict.fromkeys((2, 41, 7, 46, 16, 28, 60, 85), "wm"),  # cerebral/cerebellar WM, stem, DC
    **dict.fromkeys((3, 42, 8, 47), "gm"),  # cortex, cerebellar cortex
    **dict.fromkeys((4, 43, 5, 44, 14, 15, 24), "csf"),  # ventricles, CSF
    **dict.fromkeys((11, 50, 12, 51, 26, 58), "deep_gm"),  # caudate, putamen, accumbens
    **dict.fromkeys((10, 49), "thalamus"),
    **dict.fromkeys((13, 52), "pallidum"),
    **dict.fromkeys((17, 53), "hippocampus"),
    **dict.fromkeys((18, 54), "amygdala"),
}

# Left/right FreeSurfer label pairs, swapped when the anatomy is mirrored.
LR_PAIRS: tuple[tuple[int, int], ...] = (
    (2, 41), (3, 42), (4, 43), (5, 44), (7, 46), (8, 47), (10, 49), (11, 50), (12, 51),
    (13, 52), (17, 53), (18, 54), (25, 57), (26, 58), (28, 60), (30, 62),
)  # fmt: skip

LEFT_HIPPOCAMPUS = 17
RIGHT_HIPPOCAMPUS = 53


@dataclass(frozen=True)
class SynthConfig:
    """Parameter ranges of :class:`~lofihippseg.synth.generator.SyntheticGenerator`.

    ``(a, b)`` fields are uniform ranges a value is drawn from for every sample. Set a range to
    ``(0, 0)`` (or ``snr_range=None``) to switch that step off.

    Example:
        >>> cfg = SynthConfig(output_shape=(96, 112, 96), p_three_stacks=0.0)
        >>> cfg.snr_range
        (15.0, 50.0)
    """

    # --- output ------------------------------------------------------------------------------
    # Output grid (1 mm voxels, RAS), centred on the brain. 160 x 192 x 176 mm holds a whole
    # adult brain and most of the head; None = the source map's head bounding box.
    output_shape: tuple[int, int, int] | None = (160, 192, 176)
    # Extra random translation of the output centre (mm, normal std).
    centre_jitter_mm: float = 4.0
    # Centre of the output grid: "brain" (whole-brain FOV) or "hippocampi" (small crops).
    centre_on: str = "brain"
    # Probability of mirroring the anatomy left-right (labels swapped; SynthSeg does the same).
    p_flip: float = 0.5

    # --- spatial (SynthSeg / SynthSR, LOWFIELD.md "spatial") ----------------------------------
    scaling: float = 0.15  # per-axis scale U(1-s, 1+s); SynthSeg uses 0.2
    rotation_deg: float = 15.0  # per-axis rotation U(-r, r)
    shear: float = 0.012  # per off-diagonal shear U(-s, s)
    translation_mm: float = 0.0  # rigid shift U(-t, t) on top of centre_jitter_mm
    elastic_std: float = 3.0  # coarse-grid displacement std (voxels), SynthSeg "about 3-4"
    elastic_grid: int = 10  # coarse grid points per axis (SynthSeg: image size / 16)
    # Keep each hippocampus within plausible volumes (LOWFIELD.md: 1.7-5.7 mL adults, children
    # smaller; the 16 maps span 1.4-5.3 mL): the affine is rescaled isotropically if needed.
    hippocampus_volume_ml: Range = (1.0, 7.0)

    # --- contrast: T2-weighted priors (LOWFIELD.md "Contrast") ----------------------------------
    csf_mean: Range = (0.85, 1.0)  # CSF brightest on T2
    gm_mean: Range = (0.45, 0.65)  # grey matter, relative to CSF
    # White/grey ratio on both sides of 1: < 1 adult order, > 1 infants before myelination
    # (WM brighter than GM before ~6 months, adult order by ~24 months).
    wm_gm_ratio: Range = (0.7, 1.2)
    # Other tissues relative to grey matter (deep grey slightly darker, pallidum darkest).
    deep_gm_ratio: Range = (0.85, 1.0)
    thalamus_ratio: Range = (0.8, 0.95)
    pallidum_ratio: Range = (0.7, 0.9)
    hippocampus_ratio: Range = (0.95, 1.1)
    amygdala_ratio: Range = (0.9, 1.05)
    other_mean: Range = (0.05, 0.9)  # extra-cerebral labels: random (SynthSeg: U(0, 250)/250)
    label_jitter: float = 0.05  # each label's mean times (1 + N(0, jitter)) (randomisation)
    texture_std: Range = (0.0, 0.05)  # within-label std (SynthSeg U(0, 30) on a 0-250 scale)
    background_mean: Range = (0.0, 0.0)  # air
    # Probability of zeroing everything outside the head after noise (skull-stripped-like FOV).
    p_zero_background: float = 0.2
    # Partial-volume blur: Gaussian sigma (voxels) on the 1 mm image before acquisition.
    pv_sigma: Range = (0.3, 0.8)

    # --- acquisition: Hyperfine T2 FSE stacks (LOWFIELD.md "How a LISA image is made") --------
    inplane_mm: Range = (1.3, 1.8)  # in-plane resolution (Hyperfine ~1.5 mm)
    slice_mm: Range = (4.0, 6.0)  # slice spacing (Hyperfine 5 mm; table: 4.5-5.5 mm)
    slice_thickness_frac: Range = (0.8, 1.0)  # thickness / spacing (SynthSeg draws it <= spacing)
    # The LISA _ciso image averages three orthogonal stacks (axial, coronal, sagittal), each with
    # its own noise and a small misalignment; otherwise one stack with a random slice axis.
    p_three_stacks: float = 1.0
    stack_misalign_mm: float = 0.7  # per-stack shift std (mm) (registration error)

    # --- artefacts ------------------------------------------------------------------------------
    bias_log_std: Range = (0.0, 0.7)  # SynthSeg; SynthSR uses 0.3
    bias_grid: int = 5  # coarse grid points per axis (~2.5% of the image size in SynthSeg)
    snr_range: Range | None = (15.0, 50.0)  # per-stack SNR (ULF-Synth), Rician magnitude noise
    gamma_log_std: float = 0.5  # gamma = exp(N(0, 0.5)) on the [0, 1] image (SynthSeg)

    # --- domain randomisation (SynthSeg); all off by default, on in the release recipe ---------
    # Share of samples whose labels get fully random means U(random_mean) instead of T2 priors.
    p_random_contrast: float = 0.0
    random_mean: Range = (0.0, 1.0)
    # Isotropic head-size factor on top of ``scaling`` (young children's heads: about 0.8).
    global_scale: Range = (1.0, 1.0)
    # Share of samples acquired as ONE stack at a random resolution U(generic_mm) in-plane and
    # across slices, along a random axis (instead of the Hyperfine stacks above).
    p_generic_acquisition: float = 0.0
    generic_mm: Range = (1.0, 3.0)

    # labels -> tissue classes (override to add labels)
    tissue_of_label: dict[int, str] = field(default_factory=lambda: dict(TISSUE_OF_LABEL))

    def __post_init__(self) -> None:
        for name in (
            "p_flip",
            "p_three_stacks",
            "p_zero_background",
            "p_random_contrast",
            "p_generic_acquisition",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.output_shape is not None and (
            len(self.output_shape) != 3 or min(self.output_shape) < 8
        ):
            raise ValueError(f"output_shape must be 3 sizes >= 8, got {self.output_shape}")
        if self.centre_on not in ("brain", "hippocampi"):
            raise ValueError(f"centre_on must be 'brain' or 'hippocampi', got {self.centre_on!r}")
        if self.elastic_grid < 2 or self.bias_grid < 2:
            raise ValueError("elastic_grid and bias_grid must be >= 2")

    @classmethod
    def fast(cls, shape: tuple[int, int, int] = (128, 128, 96), **overrides) -> SynthConfig:
        """A small, quick configuration for tests and demos (same ranges, smaller output)."""
        base = {"output_shape": shape, "centre_on": "hippocampi"}
        base.update(overrides)
        return cls(**base)

    def without_artefacts(self) -> SynthConfig:
        """The same configuration with no bias field, noise, gamma or background zeroing.

        Example:
            >>> SynthConfig().without_artefacts().snr_range is None
            True
        """
        return replace(
            self,
            bias_log_std=(0.0, 0.0),
            snr_range=None,
            gamma_log_std=0.0,
            p_zero_background=0.0,
        )
