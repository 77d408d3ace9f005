"""BIDS file names: parse ``sub-01_ses-1_acq-lf_T2w.nii.gz`` into entities and build new ones.

A hand-written subset of the BIDS specification's naming rules (entity keys, their order and
value formats, from the BIDS schema 1.11): enough to find anatomical images and name our
derivatives. The test suite checks the names we build against the official schema
(``bidsschematools``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lofihippseg.errors import LoFiError

# entity keys in the order BIDS requires them in a file name (schema rules.entities)
ENTITY_ORDER = (
    "sub",
    "ses",
    "sample",
    "task",
    "tracksys",
    "acq",
    "nuc",
    "voi",
    "ce",
    "trc",
    "stain",
    "rec",
    "dir",
    "run",
    "mod",
    "echo",
    "flip",
    "inv",
    "mt",
    "part",
    "proc",
    "hemi",
    "space",
    "split",
    "recording",
    "chunk",
    "atlas",
    "seg",
    "scale",
    "res",
    "den",
    "label",
    "desc",
)
# entities whose value is an index (digits), all others are labels (alphanumeric and +)
INDEX_ENTITIES = frozenset({"run", "echo", "flip", "inv", "split", "chunk"})
_LABEL = re.compile(r"^[0-9a-zA-Z+]+$")
_INDEX = re.compile(r"^[0-9]+$")
_SUFFIX = re.compile(r"^[0-9a-zA-Z]+$")
EXTENSIONS = (".nii.gz", ".nii", ".json", ".tsv", ".png", ".svg", ".html")


def check_value(key: str, value: str) -> str:
    """Return ``value`` if it is a valid value of entity ``key``, else raise LoFiError.

    Example:
        >>> check_value("run", "01")
        '01'
    """
    if key not in ENTITY_ORDER:
        raise LoFiError(f"unknown BIDS entity {key!r}")
    pattern = _INDEX if key in INDEX_ENTITIES else _LABEL
    if not pattern.match(value):
        kind = "digits" if key in INDEX_ENTITIES else "letters, digits or +"
        raise LoFiError(f"BIDS {key}-{value}: the value must be {kind}")
    return value


def strip_prefix(label: str, key: str) -> str:
    """``sub-01`` or ``01`` -> ``01`` (labels are accepted with or without their prefix).

    Example:
        >>> strip_prefix("sub-01", "sub"), strip_prefix("01", "sub")
        ('01', '01')
    """
    label = label.strip()
    prefix = f"{key}-"
    return check_value(key, label[len(prefix) :] if label.startswith(prefix) else label)


@dataclass(frozen=True)
class BidsName:
    """A parsed BIDS file name: ordered entities, a suffix and an extension."""

    entities: dict[str, str] = field(default_factory=dict)
    suffix: str = ""
    extension: str = ""

    @property
    def stem(self) -> str:
        """The name without its extension."""
        parts = [f"{k}-{self.entities[k]}" for k in ENTITY_ORDER if k in self.entities]
        return "_".join([*parts, self.suffix])

    @property
    def filename(self) -> str:
        """The full file name."""
        return self.stem + self.extension

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of one entity."""
        return self.entities.get(key, default)

    def replace(
        self,
        suffix: str | None = None,
        extension: str | None = None,
        **entities: str | None,
    ) -> BidsName:
        """A copy with some entities set (a value of None removes the entity)."""
        new = dict(self.entities)
        for key, value in entities.items():
            if value is None:
                new.pop(key, None)
            else:
                new[key] = check_value(key, value)
        return build_name(
            new,
            self.suffix if suffix is None else suffix,
            self.extension if extension is None else extension,
        )


def build_name(entities: dict[str, str], suffix: str, extension: str) -> BidsName:
    """A BidsName with its entities validated and put in BIDS order.

    Example:
        >>> build_name({"desc": "x", "sub": "01", "space": "orig"}, "dseg", ".nii.gz").filename
        'sub-01_space-orig_desc-x_dseg.nii.gz'
    """
    for key, value in entities.items():
        check_value(key, value)
    if not _SUFFIX.match(suffix):
        raise LoFiError(f"BIDS suffix {suffix!r} must be letters and digits")
    ordered = {k: entities[k] for k in ENTITY_ORDER if k in entities}
    return BidsName(ordered, suffix, extension)


def split_extension(filename: str) -> tuple[str, str]:
    """``sub-01_T2w.nii.gz`` -> (``sub-01_T2w``, ``.nii.gz``)."""
    for ext in EXTENSIONS:
        if filename.endswith(ext):
            return filename[: -len(ext)], ext
    stem, dot, ext = filename.rpartition(".")
    return (stem, f".{ext}") if dot else (filename, "")


def parse_name(filename: str | Path) -> BidsName:
    """Parse a BIDS file name; raise LoFiError when it breaks the naming rules.

    Rules checked: ``key-value`` pairs joined by ``_`` then a suffix, ``sub`` first, known
    keys, each at most once, in BIDS order, with valid values.

    Example:
        >>> parse_name("sub-01_ses-2_acq-lowfield_T2w.nii.gz").entities
        {'sub': '01', 'ses': '2', 'acq': 'lowfield'}
    """
    name = Path(filename).name
    stem, extension = split_extension(name)
    *pairs, suffix = stem.split("_")
    if not pairs or not _SUFFIX.match(suffix):
        raise LoFiError(f"{name}: not a BIDS file name (entities then a suffix, e.g. sub-01_T2w)")
    entities: dict[str, str] = {}
    last = -1
    for pair in pairs:
        key, dash, value = pair.partition("-")
        if not dash or key not in ENTITY_ORDER:
            raise LoFiError(f"{name}: {pair!r} is not a BIDS entity (key-value)")
        if key in entities:
            raise LoFiError(f"{name}: entity {key} appears twice")
        position = ENTITY_ORDER.index(key)
        if position < last:
            raise LoFiError(f"{name}: entity {key} is out of BIDS order")
        last = position
        try:
            entities[key] = check_value(key, value)
        except LoFiError as exc:
            raise LoFiError(f"{name}: {exc}") from None
    if "sub" not in entities or next(iter(entities)) != "sub":
        raise LoFiError(f"{name}: a BIDS file name starts with sub-<label>")
    return BidsName(entities, suffix, extension)
