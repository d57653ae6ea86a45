"""A study's declaration, ``pipelines/studies/<study>.yaml``: its label, how its runs are named,
the tables and figures it writes (with their captions) and its grid of runs per scale.

The pipeline's rules (their outputs) and the study's report (its sections) read the same file,
so an output is named once. Torch- and pandas-free: the Snakefile reads it while the DAG is
built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

STUDIES_DIR = Path(__file__).resolve().parents[1] / "pipelines" / "studies"


@dataclass(frozen=True)
class StudyDeclaration:
    study: str
    title: str  # the report's heading
    spec: str  # where the report's claims come from, e.g. "methods/spdf.md §7"
    label: str  # the report's figure category, e.g. "RaPTr"
    layout: str  # sparsity (s0.75_seed0), variant (rigl_seed0) or squarehead
    tables: dict[str, str]  # output stem -> caption
    figures: dict[str, str]
    grids: dict[str, dict]  # scale -> the study's runs at that scale
    grid_requires: dict[str, list[str]] = field(default_factory=dict)  # keys, variants
    analysis: str | None = None  # another study whose analysis modules this one reuses

    @property
    def modules(self) -> str:
        """The ``<modules>`` of ``analysis.<modules>_tables``, ``_figures`` and ``_report``."""
        return self.analysis or self.study


def declared_studies(directory: Path = STUDIES_DIR) -> list[str]:
    """Every study with a declaration file, sorted."""
    return sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "schema")


def load_declaration(study: str, directory: Path = STUDIES_DIR) -> StudyDeclaration:
    """The declaration of ``study``, checked against the schema; one error line naming the file
    and key otherwise."""
    path = directory / f"{study}.yaml"
    if not path.is_file():
        raise ValueError(f"no study declaration {path} (declared: {declared_studies(directory)})")
    data = yaml.safe_load(path.read_text())
    schema = yaml.safe_load((directory / "schema.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ValueError(f"bad study declaration {path}: key {key}: {error.message}")
    return StudyDeclaration(study=study, **data)
