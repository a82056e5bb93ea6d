"""Optuna's study figures: optimisation history, parameter importances, parallel coordinates, slice.

One self-contained HTML page per study (interactive plotly, its script inlined once so the page
opens offline, as labs' machines often are) and one PNG per figure (Optuna's matplotlib versions,
for the MLflow artifact preview and reports). A figure that the study cannot support yet (no
complete trial; importances need two complete trials that differ) is left out with a note.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Optuna's matplotlib figures go through pyplot; no display here

import optuna  # noqa: E402
import optuna.visualization as plotly_vis  # noqa: E402
import optuna.visualization.matplotlib as mpl_vis  # noqa: E402
import plotly.io  # noqa: E402
from matplotlib import pyplot  # noqa: E402

FIGURES: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "history": (plotly_vis.plot_optimization_history, mpl_vis.plot_optimization_history),
    "importances": (plotly_vis.plot_param_importances, mpl_vis.plot_param_importances),
    "parallel_coordinates": (plotly_vis.plot_parallel_coordinate, mpl_vis.plot_parallel_coordinate),
    "slice": (plotly_vis.plot_slice, mpl_vis.plot_slice),
}


def write_figures(study: optuna.Study, folder: Path, stem: str) -> tuple[list[Path], list[str]]:
    """``<stem>_figures.html`` and ``<stem>_<figure>.png`` in ``folder``; returns paths and notes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    notes: list[str] = []
    sections: list[str] = []
    for name, (interactive, static) in FIGURES.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings of the matplotlib API
                figure = interactive(study)
                sections.append(plotly.io.to_html(figure, full_html=False, include_plotlyjs=not sections))
                axes = static(study)
                png = folder / f"{stem}_{name}.png"
                _figure_of(axes).savefig(png, dpi=100, bbox_inches="tight")
                paths.append(png)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            notes.append(f"figure {name} left out: {str(error).splitlines()[0]}")
        finally:
            pyplot.close("all")
    if sections:
        html = folder / f"{stem}_figures.html"
        title = f"Optuna study {study.study_name}"
        html.write_text(
            f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<h1>{title}</h1>{''.join(sections)}</body></html>\n"
        )
        paths.insert(0, html)
    return paths, notes


def _figure_of(axes: Any) -> Any:
    """The matplotlib figure behind an Axes or an array of Axes (plot_slice returns one per key)."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.get_figure()
