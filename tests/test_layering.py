"""The package's layering: data flows one way, lower layers never import higher ones.

``io -> preprocessing -> views -> models -> training | inference -> metrics/reporting -> cli``
(README, ../shared/docs/DESIGN.md). Every module's imports are read with ``ast`` (module-level
and the lazy ones inside functions alike, relative ones resolved), so a new import that breaks
a rule fails here before it is run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "lofihippseg"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# layer -> the layers none of its modules may import. ``quality`` keeps only what predict reads
# at run time (features, estimator, assessment), below ``inference``; fitting the estimator runs
# predict and lives in ``recipe``. No rule lists an allow-list: none of them is broken today.
FORBIDDEN: dict[str, frozenset[str]] = {
    "quality": frozenset({"inference", "training", "recipe", "cli"}),
    **{
        low: frozenset({"inference", "training", "recipe", "quality", "cli", "reporting"})
        for low in ("io", "preprocessing", "views", "models")
    },
    "inference": frozenset({"training", "recipe", "cli"}),
}


def module_name(path: Path, src: Path = SRC) -> str:
    """The dotted module name of a file under ``src/lofihippseg``.

    Args:
        path: a ``.py`` file of the package.
        src: the package's folder.

    Returns:
        e.g. ``lofihippseg.quality.assess``; a package's ``__init__.py`` gives the package.
    """
    parts = (PACKAGE, *path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, src: Path = SRC) -> Iterator[tuple[str, int]]:
    """Every dotted name a module imports, with its line (relative imports made absolute).

    ``from a.b import c`` yields ``a.b.c``, so ``from lofihippseg import quality`` counts as an
    import of ``lofihippseg.quality``.

    Args:
        path: a ``.py`` file of the package.
        src: the package's folder.

    Yields:
        (dotted name, line number) for each imported name.
    """
    module = module_name(path, src)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def layer_of(name: str) -> str | None:
    """The top-level subpackage of ``lofihippseg`` a dotted name belongs to, else None."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def violations(layer: str, src: Path = SRC) -> list[str]:
    """Every import in ``layer`` that ``FORBIDDEN`` rules out, as ``file:line: module -> name``.

    Args:
        layer: a top-level subpackage with a rule in ``FORBIDDEN``.
        src: the package's folder.

    Returns:
        One line per offending import, empty when the layer keeps its rule.
    """
    found = []
    for path in sorted((src / layer).rglob("*.py")):
        module = module_name(path, src)
        for name, line in imported_names(path, src):
            if layer_of(name) in FORBIDDEN[layer]:
                found.append(f"{path.relative_to(src.parent)}:{line}: {module} -> {name}")
    return found


def test_layers_named_in_the_rules_exist():
    """A renamed or removed package would make its rule pass for nothing."""
    named = set(FORBIDDEN).union(*FORBIDDEN.values())
    assert sorted(n for n in named if not (SRC / n / "__init__.py").is_file()) == []


def test_the_import_reader_sees_absolute_relative_and_lazy_imports(tmp_path):
    """The parser the rules rest on: each form of import resolves to the module it names."""
    root = tmp_path / PACKAGE
    (root / "quality").mkdir(parents=True)
    probe = root / "quality" / "probe.py"
    probe.write_text(
        "import lofihippseg.io.nifti\n"
        "from lofihippseg import recipe\n"
        "from ..inference import api\n"
        "from .features import SIDES\n"
        "def late():\n"
        "    from lofihippseg.cli.predict import command\n",
        encoding="utf-8",
    )
    assert module_name(probe, root) == "lofihippseg.quality.probe"
    assert [name for name, _ in imported_names(probe, root)] == [
        "lofihippseg.io.nifti",
        "lofihippseg.recipe",
        "lofihippseg.inference.api",
        "lofihippseg.quality.features.SIDES",
        "lofihippseg.cli.predict.command",
    ]
    broken = violations("quality", root)
    assert [b.split(": ")[1] for b in broken] == [
        "lofihippseg.quality.probe -> lofihippseg.recipe",
        "lofihippseg.quality.probe -> lofihippseg.inference.api",
        "lofihippseg.quality.probe -> lofihippseg.cli.predict.command",
    ]


def test_predict_reads_the_quality_estimate_from_below():
    """The edge the quality rule exists for: inference imports quality, not the reverse."""
    api = SRC / "inference" / "api.py"
    assert any(layer_of(name) == "quality" for name, _ in imported_names(api))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(layer):
    """No module of ``layer`` imports a layer ``FORBIDDEN`` lists for it."""
    broken = violations(layer)
    assert broken == [], "imports against the layering:\n" + "\n".join(broken)
