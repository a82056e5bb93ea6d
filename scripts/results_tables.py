"""The headline tables of README.md and docs/results.md, generated from one run's reports.

    .venv/bin/python scripts/results_tables.py            # print the tables
    .venv/bin/python scripts/results_tables.py --write    # replace the generated blocks in place

It reads reports/metrics.json (test set), reports/external.json (external cohorts),
reports/audit.json (the sealed cohort) and reports/promotion.json, and refuses to mix runs: every
one of them must be the output dvc.lock records (same md5), so all come from one `dvc repro`
state, and the commit and date printed are those the reports were stamped with. No number in the
generated blocks is typed by hand. The blocks sit between `<!-- results:begin -->` and
`<!-- results:end -->`; text outside them is left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from ctcid.evaluation.tables import cell_table, cutoff_table, fmt, fmt_p, patient_table, review_table

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
REPORTS = ("reports/metrics.json", "reports/external.json", "reports/audit.json", "reports/promotion.json")
# read for the targets table: the test detections' scores and the cells they belong to
TABLES = ("reports/test_predictions.csv", "data/segment/manifest.parquet")
SPOT_CHECK = "behaviour: more CEP8 spots raise the score"
SHIFTED_DROP = 0.03  # the most specificity any backbone may lose on a shifted cohort (issue 29)
TARGETS = ("README.md", "docs/results.md")


class NotOneRun(Exception):
    pass


def locked_md5(root: Path) -> dict[str, str]:
    """Every output dvc.lock records, by path, with its md5."""
    lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    found = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if "md5" in out:
                found[out["path"]] = out["md5"]
    return found


def check_one_run(root: Path) -> None:
    """Each report is the file dvc.lock records: no report from another run, none edited."""
    try:
        locked = locked_md5(root)
    except OSError as error:
        raise NotOneRun(f"no dvc.lock ({error}): run 'make run' first") from None
    for name in REPORTS + TABLES[:1]:  # the manifest is inside the segment stage's folder output
        path = root / name
        if not path.is_file():
            raise NotOneRun(f"{name} is missing: run 'make run' (dvc repro) first")
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        if locked.get(name) != digest:
            raise NotOneRun(
                f"{name} is not the output dvc.lock records (md5 {digest} vs {locked.get(name)}): "
                "the reports are not one run; run 'dvc repro' (or 'dvc checkout') and try again"
            )


def _load(root: Path, name: str) -> dict[str, Any]:
    return json.loads((root / name).read_text())


def _stamps(reports: dict[str, dict[str, Any]]) -> tuple[str, str]:
    stamps = [r["run"] for r in reports.values() if isinstance(r.get("run"), dict)]
    commits = sorted({s.get("commit", "?") for s in stamps})
    dates = sorted(s.get("date", "?") for s in stamps)
    if len(commits) > 1:
        raise NotOneRun(
            f"the reports were made at different commits ({', '.join(commits)}): re-run the pipeline "
            "from one commit (make run) before publishing"
        )
    return (commits[0] if commits else "unknown"), (dates[-1] if dates else "unknown")


def _focus(models: dict[str, Any], first: str) -> dict[str, Any]:
    """The selected model or champion, the GBM and the rule, in that order."""
    return {name: models[name] for name in (first, "gbm", "rule") if name in models}


def cohort_lines(title: str, cohort: dict[str, Any]) -> list[str]:
    models = _focus(cohort["models"], "champion")
    return [
        f"**{title}** ({cohort['samples']} patients, {cohort['ctc']} CTC among "
        f"{cohort['labelled']} labelled cells):",
        "",
        *patient_table(models),
        "",
        *cutoff_table(models, 1),
        "",
        *cutoff_table(models, 5),
        "",
    ]


def worst_site_lines(external: dict[str, Any]) -> list[str]:
    rows = [
        "| cohort | champion MAE | rule MAE | champion - rule (p) | champion spec. (cells) |",
        "|---|---|---|---|---|",
    ]
    for name, cohort in external["cohorts"].items():
        champion = cohort["models"].get("champion", {})
        rule = cohort["models"].get("rule", {})
        versus = champion.get("versus_rule", {})
        rows.append(
            f"| {name} | {fmt(champion.get('endpoints', {}).get('mae'), 2)} | "
            f"{fmt(rule.get('endpoints', {}).get('mae'), 2)} | "
            f"{fmt(versus.get('mae_difference'), 2)} (p {fmt_p(versus.get('mae_difference_p'))}) | "
            f"{fmt(champion.get('cells', {}).get('specificity'), 3)} |"
        )
    return rows


def lookalikes_called(root: Path, model: str, threshold: float) -> tuple[float, int]:
    """Share of the test set's CTC-sized CD45-negative diploid cells (annotated ``diploid_cd45neg``,
    nuclear area at least the lower quartile of the test CTCs') that ``model`` calls CTC."""
    import pandas as pd  # only this table needs it

    predictions = pd.read_csv(root / TABLES[0])
    cells = pd.read_parquet(root / TABLES[1]).set_index("crop_index").loc[predictions["crop_index"]]
    kind = cells["true_cell_type"].astype(object).fillna("").to_numpy()
    area = cells["area"].to_numpy()
    floor = float(pd.Series(area[kind == "ctc"]).quantile(0.25)) if (kind == "ctc").any() else 0.0
    chosen = (kind == "diploid_cd45neg") & (area >= floor)
    called = predictions[model].to_numpy()[chosen] >= threshold
    return (float(called.mean()) if chosen.any() else float("nan")), int(chosen.sum())


def _every_cohort(
    metrics: dict[str, Any], external: dict[str, Any], audit: dict[str, Any], on_test: str, elsewhere: str
) -> dict[str, dict[str, Any]]:
    """One model's entry in the test set, every external cohort and the sealed ones, by cohort."""
    found = {"test set": metrics["models"].get(on_test, {})}
    found.update({name: c["models"].get(elsewhere, {}) for name, c in external["cohorts"].items()})
    found.update({f"{name} (sealed)": c["models"].get(elsewhere, {}) for name, c in audit["cohorts"].items()})
    return found


def _met(passed: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "-"}[passed]


def target_lines(root: Path, metrics: dict[str, Any], external: dict[str, Any],
                 audit: dict[str, Any], promotion: dict[str, Any]) -> list[str]:
    """Issue 29's targets, each met or missed, from the same reports."""
    selected = metrics["selected"]
    chosen = metrics["models"][selected]
    cells, ci = chosen["operating"], chosen.get("ci95", {})
    rows = ["| target | measured | |", "|---|---|---|"]

    def interval(name: str) -> str:
        bounds = ci.get(name) or {}
        low, high = bounds.get("low"), bounds.get("high")
        return f"{fmt(cells.get(name), 3)} [{fmt(low, 3)}, {fmt(high, 3)}]"

    rows.append(f"| test sensitivity >= 0.97 (`{selected}`) | {interval('sensitivity')} | "
                f"{_met(cells['sensitivity'] >= 0.97)} |")
    spec_ok = _met(cells["specificity"] >= 0.99)
    rows.append(f"| test specificity >= 0.990 | {interval('specificity')} | {spec_ok} |")
    share, n = lookalikes_called(root, selected, float(cells["threshold"]))
    rows.append(f"| CTC-sized CD45-negative diploid test cells called CTC <= 10 % | {fmt(share, 3)} of {n} "
                f"| {_met(share <= 0.10)} |")
    spot = next((c for c in promotion.get("criteria", []) if c.get("name") == SPOT_CHECK), {})
    rows.append(f"| spot probe shift >= 0.2, share >= 0.9 (the gate) | {spot.get('challenger', '-')} | "
                f"{_met(spot.get('passed'))} |")
    cohorts = _every_cohort(metrics, external, audit, selected, "champion")
    rules = _every_cohort(metrics, external, audit, "rule", "rule")
    for name, model in cohorts.items():
        ours, rule = model.get("endpoints", {}), rules[name].get("endpoints", {})
        versus = model.get("versus_rule", {})
        mae_ok = ours.get("mae") is not None and ours["mae"] <= rule.get("mae", float("inf")) + 1e-9
        blank_ok = (ours.get("blank_positive_share") is None or rule.get("blank_positive_share") is None
                    or ours["blank_positive_share"] <= rule["blank_positive_share"] + 1e-9)
        rows.append(
            f"| {name}: patient MAE <= rule's; CTC-free called positive <= rule's | "
            f"MAE {fmt(ours.get('mae'), 2)} vs {fmt(rule.get('mae'), 2)} "
            f"({fmt(versus.get('mae_difference'), 2)} [{fmt(versus.get('mae_difference_low'), 2)}, "
            f"{fmt(versus.get('mae_difference_high'), 2)}]); CTC-free positive "
            f"{fmt(ours.get('blank_positive_share'), 2)} vs {fmt(rule.get('blank_positive_share'), 2)} | "
            f"{_met(mae_ok)}, {_met(blank_ok)} |"
        )
    same = external["cohorts"].get("same_site", {}).get("models", {})
    for backbone in [b for b in metrics["models"] if b not in ("gbm", "rule")]:
        home = same.get(backbone, {}).get("cells", {}).get("specificity")
        drops = {name: home - c["models"][backbone]["cells"]["specificity"]
                 for name, c in external["cohorts"].items()
                 if name != "same_site" and home is not None and backbone in c["models"]}
        worst = max(drops, key=drops.get) if drops else None
        rows.append(
            f"| {backbone}: specificity lost on a shifted cohort <= 3 points | "
            + (f"{100 * drops[worst]:+.1f} points at {worst} (same site {fmt(home, 3)})" if worst else "-")
            + f" | {_met(None if worst is None else drops[worst] <= SHIFTED_DROP)} |"
        )
    return ["**Issue 29's targets** (the selected model; every cohort's champion and rule):", "", *rows, ""]


def render(root: Path) -> str:
    check_one_run(root)
    reports = {name: _load(root, name) for name in REPORTS}
    commit, date = _stamps(reports)
    metrics = reports["reports/metrics.json"]
    external = reports["reports/external.json"]
    audit = reports["reports/audit.json"]
    promotion = reports["reports/promotion.json"]
    test, selected = metrics["test"], metrics["selected"]
    test_models = _focus(metrics["models"], selected)
    lines = [
        BEGIN,
        "",
        f"*Generated by `scripts/results_tables.py` from one `make run` (commit `{commit}`, {date}); "
        "95 % intervals resample whole patients. Do not edit by hand.*",
        "",
        f"**Test set** ({test['samples']} patients, {test['ctc']} CTC among {test['cells']} labelled "
        f"cells); selected on cross-validation: `{selected}`; promotion: {promotion.get('action')} "
        f"(failed: {', '.join(promotion.get('failed') or []) or 'none'}).",
        "",
        *cell_table(test_models),
        "",
        *patient_table(test_models),
        "",
        *cutoff_table(test_models, 1),
        "",
        *review_table(test_models),
        "",
    ]
    for name, cohort in audit["cohorts"].items():
        lines += cohort_lines(f"Sealed cohort `{name}` (read by no decision; `ctcid audit`)", cohort)
    same = external["cohorts"].get("same_site")
    if same is not None:
        lines += cohort_lines("External, same site", same)
    lines += ["**Every external cohort**, counting per patient:", "", *worst_site_lines(external), ""]
    lines += [*target_lines(root, metrics, external, audit, promotion), END]
    return "\n".join(lines)


def replace_block(text: str, block: str, path: Path) -> str:
    if BEGIN not in text or END not in text:
        raise NotOneRun(f"{path} has no '{BEGIN}' ... '{END}' block to fill")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + block + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="the run's project (default: here)")
    parser.add_argument(
        "--docs", type=Path, default=Path("."), help="where README.md and docs/ are (default: here)"
    )
    parser.add_argument(
        "--write", action="store_true", help="replace the blocks in README.md and docs/results.md"
    )
    args = parser.parse_args(argv)
    try:
        block = render(args.root)
        if args.write:
            for target in TARGETS:
                path = args.docs / target
                path.write_text(replace_block(path.read_text(), block, path))
                print(f"written: {path}", file=sys.stderr)
        else:
            print(block)
    except NotOneRun as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
