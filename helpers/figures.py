"""One look for every statistical figure of the kit, and one way to save a figure (PNG for notebooks and the run
report, SVG for papers and slides)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import seaborn as sns

THEME: dict[str, Any] = {"style": "whitegrid", "context": "notebook", "palette": "colorblind", "font_scale": 0.9}
FORMATS = ("png", "svg")
DPI = 110


def apply_theme() -> None:
    """Use the kit's seaborn theme for the figures drawn from now on (idempotent)."""
    sns.set_theme(**THEME)


def save_figure_files(fig: Any, stem: str | Path, formats: tuple[str, ...] = FORMATS, dpi: int = DPI) -> list[Path]:
    """Write `fig` as STEM.png and STEM.svg (tight bounding box); returns the paths in `formats` order."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight", format=fmt)
        paths.append(path)
    return paths
