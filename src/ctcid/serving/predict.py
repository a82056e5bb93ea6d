"""``ctcid predict``: the service's answer for fields on disk, without a server.

The packaged model (the newest Bento's) scores in-process; reading, checks, segmentation and
counting are the functions the service runs, so a field gets the same cells and counts either way.
Writes, per run: ``<sample>_cells.csv`` (one row per cell), ``<sample>.json`` (the per-sample
answer of ``POST /count_sample``) and ``<field>_overlay.png`` (the model's counted CTCs in yellow).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ctcid.config.serving import ServingParams
from ctcid.errors import CtcidError, InputRejected
from ctcid.segmentation.report import draw_overlay
from ctcid.serving.bento import load_served, probabilities
from ctcid.serving.counting import (
    CellCall,
    CutField,
    FieldCount,
    SampleCount,
    field_count,
    prepare_field,
    problem_of,
    sample_count,
)


@dataclass(frozen=True)
class Prediction:
    sample: SampleCount
    fields: list[FieldCount]
    written: list[Path]


def predict_fields(
    paths: Sequence[Path], sample: str, out: Path, model_tag: str, limits: ServingParams
) -> Prediction:
    """Count CTCs in ``paths`` (one sample's multi-channel fields) and write the three outputs."""
    served, pyfunc = load_served(model_tag)
    out.mkdir(parents=True, exist_ok=True)
    results, problems, written = [], [], []
    for name, path in _named(paths):
        try:
            cut = prepare_field(name, {name: path}, served, limits)
        except InputRejected as error:
            problems.append(problem_of(name, error))
            continue
        result = field_count(name, cut, probabilities(pyfunc, cut.crops), served)
        results.append(result)
        written.append(_overlay(out / f"{Path(name).stem}_overlay.png", cut, result, served.channels))
    answer = sample_count(sample, results, problems, served)
    written.append(_cells_csv(out / f"{sample}_cells.csv", results))
    (out / f"{sample}.json").write_text(answer.model_dump_json(indent=1) + "\n")
    written.append(out / f"{sample}.json")
    return Prediction(answer, results, written)


def summary_lines(done: Prediction, out: Path) -> str:
    """What ``ctcid predict`` prints (rich markup): the count, then skipped and unfamiliar fields."""
    answer = done.sample
    lines = [
        f"{answer.sample}: {answer.ctc_count} CTC by {answer.model} (rule: {answer.rule_count}) in "
        f"{answer.cells} cells of {answer.fields_used}/{answer.fields_sent} fields; written to {out}"
    ]
    lines += [f"[yellow]skipped[/yellow] {problem.field}: {problem.reason}" for problem in answer.problems]
    lines += [
        f"[yellow]unfamiliar field[/yellow] ({result.drift_kind}) {result.field}: drift score "
        f"{result.drift_score:.1f} ({result.drift_reason})"
        for result in done.fields
        if result.drift_flag
    ]
    if answer.drift_flag:
        lines.append(
            f"[yellow]warning:[/yellow] {answer.sample} looks unlike the model's training data; "
            "its count may be wrong: review the overlays (docs/external.md#drift)"
        )
    return "\n".join(lines)


def _named(paths: Sequence[Path]) -> Iterator[tuple[str, Path]]:
    """Field names as the service reports them (the file name); a repeated name gets its folder."""
    names = [p.name for p in paths]
    for path in paths:
        if not path.is_file():
            raise CtcidError(f"{path}: no such file")
        yield (path.name if names.count(path.name) == 1 else f"{path.parent.name}/{path.name}"), path


def _cells_csv(path: Path, results: Sequence[FieldCount]) -> Path:
    rows = [{"field": r.field, **cell.model_dump()} for r in results for cell in r.cell_table]
    pd.DataFrame(rows, columns=["field", *CellCall.model_fields]).to_csv(path, index=False)
    return path


def _overlay(path: Path, cut: CutField, result: FieldCount, channels: Sequence[str]) -> Path:
    analysis = cut.analysis
    draw_overlay(
        path,
        cut.image,
        channels,
        [c.contour for c in analysis.nuclei.nuclei],
        [cell.counted for cell in result.cell_table],
        analysis.spots.rows,
        analysis.spots.cols,
        f"{result.field} {result.model}: {result.ctc_count} CTC",
        called="model CTC",
    )
    return path
