"""Finding and loading the two VNets that inference needs.

Three sources are accepted (see :mod:`lofihippseg.models.registry`):

- a training run folder: ``config.json`` + ``checkpoints/best.pt`` (else ``last.pt``);
- a single file: a bundle (``registry.bundle_dict``) or a training checkpoint (keys
  ``spec``, ``vnet1``, ``vnet2``);
- the authors' two released plain state dicts (``checkpoint1`` and ``checkpoint2``).

With no model at all, the packaged default model is used when the package ships one.
Every file is read through :func:`~lofihippseg.models.registry.safe_torch_load`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lofihippseg.errors import LoFiError
from lofihippseg.inference.localiser import Localiser, localiser_from_entry
from lofihippseg.inference.refiner import Refiner, refiner_from_entry
from lofihippseg.models.registry import (
    ModelSpec,
    build_vnet,
    infer_n_filters,
    load_weights,
    safe_torch_load,
    spec_from_dict,
    without_init,
)

log = logging.getLogger(__name__)

RECIPES = ("paper", "released")
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "data" / "model" / "lofihippseg_default.pt"


@dataclass
class LoadedModel:
    """Two VNets in eval mode with the spec they were trained with.

    Attributes:
        spec: width and preprocessing of the networks.
        vnet1: network of view 1 (the image).
        vnet2: network of view 2 (the frequency view).
        source: where the weights came from (for sidecars and messages).
        single_view: trained as a single VNet (ablation): ``vnet2`` is ``vnet1`` and sees the
            image, so both "views" are the same.
        localiser: the bundle's hippocampus localiser, if it has one (``inference.roi``).
        family: the contrast family ``vnet1``/``vnet2`` were trained for (None = unnamed).
        alternatives: more pairs of networks (same spec) by contrast family; inference runs
            every pair and keeps the one whose two views agree best (``PredictSettings.family``).
        family_grid_mm: working grids of the alternatives that run on another grid than
            ``spec.grid_mm``.
        refiner: the bundle's outline refiner, if it has one (``inference.refiner``).
        tta: the bundle's advice on left-right mirror test-time augmentation (its key
            ``"tta"``, chosen on validation for that model): ``PredictSettings.tta``'s default.
            The key is true, false, or the list of contrast families to mirror
            (``tta_families``; ``tta`` is then true).
        tta_families: the families the bundle advises mirroring (None: all of them when
            ``tta``).
        family_rule: the bundle's advice on which pair runs (its key ``"family_rule"``:
            ``{"head": NAME, "crop": NAME}``, chosen on validation): ``--family auto`` then runs
            one pair, chosen by the scan's field of view (``inference.plan``); None = every pair
            runs and the best-agreeing one is kept.
    """

    spec: ModelSpec
    vnet1: torch.nn.Module
    vnet2: torch.nn.Module
    source: str
    single_view: bool = False
    localiser: Localiser | None = None
    family: str | None = None
    alternatives: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = field(default_factory=dict)
    family_grid_mm: dict[str, float | None] = field(default_factory=dict)
    refiner: Refiner | None = None
    tta: bool = False
    tta_families: tuple[str, ...] | None = None
    family_rule: dict[str, str] | None = None

    def grid_of(self, family: str | None) -> float | None:
        """The working grid (mm) of a family's pair: its own if it has one, else the spec's."""
        return self.family_grid_mm.get(family, self.spec.grid_mm) if family else self.spec.grid_mm

    @property
    def pairs(self) -> dict[str | None, tuple[torch.nn.Module, torch.nn.Module]]:
        """Every pair of networks by family name, the first pair first."""
        return {self.family: (self.vnet1, self.vnet2), **self.alternatives}

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move every network to ``device`` (in place) and return self."""
        for net1, net2 in self.pairs.values():
            net1.to(device)
            net2.to(device)
        if self.localiser is not None:
            self.localiser.to(device)
        if self.refiner is not None:
            self.refiner.to(device)
        return self


def _build(spec: ModelSpec, sd1: Any, sd2: Any, where: str, device: str) -> LoadedModel:
    nets = []
    for state, name in ((sd1, "vnet1"), (sd2, "vnet2")):
        net = without_init(lambda: build_vnet(spec))
        load_weights(net, state, f"{where} ({name})")  # also refuses NaN/inf weights
        nets.append(net.eval().to(device))
    return LoadedModel(spec=spec, vnet1=nets[0], vnet2=nets[1], source=where)


def _with_recipe(spec: ModelSpec, recipe: str | None) -> ModelSpec:
    if recipe is None:
        return spec
    if recipe not in RECIPES:
        raise LoFiError(f"unknown recipe {recipe!r}; expected one of {RECIPES}")
    return dataclasses.replace(spec, recipe=recipe)


def _spec_of(data: dict[str, Any], where: str) -> ModelSpec:
    try:
        return spec_from_dict(dict(data))
    except (LoFiError, TypeError) as exc:
        raise LoFiError(f"{where}: bad model spec ({exc})") from None


def _from_bundle(path: Path, device: str, config_spec: dict | None = None) -> LoadedModel:
    data = safe_torch_load(path)
    if not isinstance(data, dict) or "vnet1" not in data or "vnet2" not in data:
        raise LoFiError(
            f"{path}: not a LoFiHippSeg model (no vnet1/vnet2); for the authors' two released "
            "files use --checkpoint1 FILE --checkpoint2 FILE --recipe released"
        )
    spec_dict = data.get("spec") or config_spec
    if not isinstance(spec_dict, dict):
        raise LoFiError(f"{path}: checkpoint has no model spec")
    model = _build(_spec_of(spec_dict, str(path)), data["vnet1"], data["vnet2"], str(path), device)
    if data.get("single_view"):  # network 2 was never trained: use network 1 alone
        model.vnet2, model.single_view = model.vnet1, True
    if data.get("localiser") is not None:
        model.localiser = localiser_from_entry(data["localiser"], str(path), device)
    if data.get("refiner") is not None:
        model.refiner = refiner_from_entry(data["refiner"], str(path), device)
    model.family, model.alternatives, model.family_grid_mm = _families(data, model, path, device)
    tta = data.get("tta", False)
    if isinstance(tta, list) and all(isinstance(f, str) and f in model.pairs for f in tta):
        model.tta, model.tta_families = bool(tta), tuple(tta)
    elif isinstance(tta, bool):
        model.tta = tta
    else:
        raise LoFiError(
            f"{path}: bad tta entry {tta!r} (true, false or a list of its contrast families)"
        )
    model.family_rule = _family_rule(data.get("family_rule"), model, path)
    return model


def _family_rule(entry: Any, model: LoadedModel, path: Path) -> dict[str, str] | None:
    """The bundle's ``family_rule`` (``{"head": NAME, "crop": NAME}``, both pairs it has)."""
    if entry is None:
        return None
    names = set(model.pairs)
    if (
        not isinstance(entry, dict)
        or set(entry) != {"head", "crop"}
        or not all(isinstance(v, str) and v in names for v in entry.values())
    ):
        raise LoFiError(
            f"{path}: bad family_rule {entry!r} (expected head and crop, each one of the "
            f"model's contrast families: {sorted(str(n) for n in names)})"
        )
    return {"head": entry["head"], "crop": entry["crop"]}


def _families(
    data: dict[str, Any], model: LoadedModel, path: Path, device: str
) -> tuple[str | None, dict[str, tuple[torch.nn.Module, torch.nn.Module]], dict[str, float | None]]:
    """The bundle's first pair's family name, its other pairs (contrast families) and the
    working grids of those that have their own."""
    family, families = data.get("family"), data.get("families") or {}
    if family is not None and not isinstance(family, str):
        raise LoFiError(f"{path}: bad contrast family name {family!r}")
    if not isinstance(families, dict) or (families and family is None):
        raise LoFiError(f"{path}: bad contrast families (expected names with vnet1/vnet2 each)")
    pairs, grids = {}, {}
    for name, entry in families.items():
        if not isinstance(entry, dict) or "vnet1" not in entry or "vnet2" not in entry:
            raise LoFiError(f"{path}: contrast family {name!r} has no vnet1/vnet2")
        if model.single_view:
            raise LoFiError(f"{path}: a single-view model cannot have contrast families")
        other = _build(model.spec, entry["vnet1"], entry["vnet2"], f"{path} ({name})", device)
        pairs[str(name)] = (other.vnet1, other.vnet2)
        if "grid_mm" in entry:  # validated as a spec's grid is
            try:
                grids[str(name)] = dataclasses.replace(model.spec, grid_mm=entry["grid_mm"]).grid_mm
            except LoFiError as exc:
                raise LoFiError(f"{path}: contrast family {name!r}: {exc}") from None
    return family, pairs, grids


def _inherited_localiser(init: Any, device: str) -> Localiser | None:
    """The localiser of the bundle a run was initialised from (``init1``), if it has one.

    Fine-tuning changes the fine networks, not where the hippocampi are, so a run started from
    the packaged model keeps its localiser. An unreadable ``init1`` only loses it (a warning).
    """
    if not isinstance(init, str) or not Path(init).is_file():
        return None
    try:
        data = safe_torch_load(init)
        if isinstance(data, dict) and data.get("localiser") is not None:
            return localiser_from_entry(data["localiser"], f"{init} (init1)", device)
    except LoFiError as exc:
        log.warning("not using the localiser of init1: %s", exc)
    return None


def _from_run(run: Path, device: str) -> LoadedModel:
    config_data: dict[str, Any] = {}
    config = run / "config.json"
    if config.is_file():
        try:
            config_data = json.loads(config.read_text())
        except json.JSONDecodeError:
            config_data = None
        if not isinstance(config_data, dict):
            raise LoFiError(f"{config}: not valid JSON; is this a training run folder?")
    for name in ("best.pt", "last.pt"):
        ckpt = run / "checkpoints" / name
        if ckpt.is_file():
            loaded = _from_bundle(ckpt, device, config_data.get("model"))
            loaded.source = str(ckpt)
            if loaded.localiser is None:
                loaded.localiser = _inherited_localiser(config_data.get("init1"), device)
            return loaded
    raise LoFiError(
        f"{run}: no checkpoints/best.pt or checkpoints/last.pt; is this a training run?"
    )


def _from_released(ckpt1: Path, ckpt2: Path, recipe: str | None, device: str) -> LoadedModel:
    states = []
    for path in (ckpt1, ckpt2):
        state = safe_torch_load(path)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise LoFiError(f"{path}: not a state dict")
        states.append(state)
    widths = []
    for path, state in zip((ckpt1, ckpt2), states, strict=True):
        try:
            widths.append(infer_n_filters(state))
        except (LoFiError, AttributeError, IndexError) as exc:
            raise LoFiError(f"{path}: {exc}") from None
    if widths[0] != widths[1]:
        raise LoFiError(f"{ckpt1}, {ckpt2}: the two networks differ in width {widths}")
    recipe = recipe or "released"
    base = ModelSpec.released() if recipe == "released" else ModelSpec()
    spec = dataclasses.replace(_with_recipe(base, recipe), n_filters=widths[0])
    loaded = _build(spec, states[0], states[1], f"{ckpt1} + {ckpt2}", device)
    return loaded


def load_model(
    model: str | Path | None = None,
    checkpoint1: str | Path | None = None,
    checkpoint2: str | Path | None = None,
    recipe: str | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load the two networks from a run folder, a bundle file or two released state dicts.

    Args:
        model: a training run folder or a single bundle/checkpoint file; None = packaged default.
        checkpoint1: the authors' ``best_model_1.pth`` (view 1 network), with ``checkpoint2``.
        checkpoint2: the authors' ``best_model_2.pth`` (view 2 network).
        recipe: ``paper`` or ``released``; overrides the spec's recipe (inference defaults
            follow it). Two plain state dicts default to ``released`` (legacy view, union).
        device: where to put the networks.

    Returns:
        The networks in eval mode.

    Raises:
        LoFiError: missing or unreadable files, weights that do not fit, no model available.

    Example:
        >>> m = load_model("runs/my_run")  # doctest: +SKIP
        >>> m = load_model(checkpoint1="best_model_1.pth", checkpoint2="best_model_2.pth",
        ...                recipe="released")  # doctest: +SKIP
    """
    device = str(device)
    if recipe is not None and recipe not in RECIPES:
        raise LoFiError(f"unknown recipe {recipe!r}; expected one of {RECIPES}")
    if checkpoint1 is not None or checkpoint2 is not None:
        if model is not None:
            raise LoFiError("give either --model or --checkpoint1/--checkpoint2, not both")
        if checkpoint1 is None or checkpoint2 is None:
            raise LoFiError("the released model needs both --checkpoint1 and --checkpoint2")
        return _from_released(Path(checkpoint1), Path(checkpoint2), recipe, device)
    if model is None:
        if not DEFAULT_MODEL.is_file():
            raise LoFiError(
                "no model given and this installation ships no default model; pass "
                "--model RUN_FOLDER_OR_FILE (train one with `lofihippseg train`) or the released "
                "files with --checkpoint1/--checkpoint2 --recipe released"
            )
        model = DEFAULT_MODEL
    path = Path(model)
    if path.is_dir():
        loaded = _from_run(path, device)
    elif path.is_file():
        loaded = _from_bundle(path, device)
    else:
        raise LoFiError(f"{path}: model not found (expected a run folder or a model file)")
    loaded.spec = _with_recipe(loaded.spec, recipe)
    return loaded
