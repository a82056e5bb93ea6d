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
    for name in REPORTS:
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
    lines += ["**Every external cohort**, counting per patient:", "", *worst_site_lines(external), "", END]
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
