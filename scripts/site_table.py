"""Before/after table of every model per external cohort, from two runs' reports (docs/results.md).

    .venv/bin/python scripts/site_table.py BEFORE_REPORTS AFTER_REPORTS

Each argument is a ``reports/`` folder holding ``external.json`` (``ctcid external``) and
``metrics.json`` (``ctcid evaluate``). Prints Markdown: per cohort, sensitivity, specificity (95 %
intervals), AUC and per-patient MAE of the champion, each backbone and the rule, before -> after,
then the specificity drop of each model from its same-site figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODELS = ("champion", "resnet18", "resnet50", "vgg16", "vgg19", "alexnet", "rule")
HOME = "same_site"


def _load(folder: Path) -> dict:
    return json.loads((folder / "external.json").read_text())["cohorts"]


def _cell(model: dict | None, metric: str, percent: bool = True) -> str:
    if model is None or "cells" not in model:
        return "-"
    value = model["cells"][metric]
    interval = model.get("cells_ci95", {}).get(metric)
    scale = 100.0 if percent else 1.0
    text = f"{value * scale:.1f}" if percent else f"{value:.3f}"
    if interval:
        text += f" [{interval['low'] * scale:.1f}, {interval['high'] * scale:.1f}]" if percent else ""
    return text


def _mae(model: dict | None) -> str:
    if model is None or "patients" not in model:
        return "-"
    low_high = model.get("patients_ci95", {}).get("mae")
    text = f"{model['patients']['mae']:.2f}"
    return text + (f" [{low_high['low']:.2f}, {low_high['high']:.2f}]" if low_high else "")


def cohort_table(name: str, before: dict, after: dict) -> str:
    lines = [
        f"### {name}",
        "",
        "| model | sensitivity % before | after | specificity % before | after | AUC before | after "
        "| patient MAE before | after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model in MODELS:
        b = before.get("models", {}).get(model)
        a = after.get("models", {}).get(model)
        if b is None and a is None:
            continue
        lines.append(
            f"| {model} | {_cell(b, 'sensitivity')} | {_cell(a, 'sensitivity')} "
            f"| {_cell(b, 'specificity')} | {_cell(a, 'specificity')} "
            f"| {_cell(b, 'auc', False)} | {_cell(a, 'auc', False)} | {_mae(b)} | {_mae(a)} |"
        )
    return "\n".join(lines)


def drop_table(runs: dict[str, dict]) -> str:
    """Points of specificity each model loses from its same-site figure, worst cohort."""
    lines = ["| model | " + " | ".join(f"worst drop {label} (cohort)" for label in runs) + " |"]
    lines.append("| --- |" + " --- |" * len(runs))
    for model in MODELS:
        cells = []
        for cohorts in runs.values():
            home = cohorts.get(HOME, {}).get("models", {}).get(model, {}).get("cells")
            if home is None:
                cells.append("-")
                continue
            drops = {
                name: 100 * (home["specificity"] - c["models"][model]["cells"]["specificity"])
                for name, c in cohorts.items()
                if name != HOME and "cells" in c.get("models", {}).get(model, {})
            }
            worst = max(drops, key=drops.get) if drops else None
            cells.append(f"{drops[worst]:+.1f} ({worst})" if worst else "-")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(before_dir: str, after_dir: str) -> None:
    before, after = _load(Path(before_dir)), _load(Path(after_dir))
    for name in after:
        print(cohort_table(name, before.get(name, {}), after[name]))
        print()
    print(drop_table({"before": before, "after": after}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
