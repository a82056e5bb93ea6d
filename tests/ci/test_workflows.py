"""The GitHub workflows (.github/workflows): schema-valid, clean under zizmor, and hardened as intended.

`make lint` runs the same two tools; these tests keep the checks in `make test` too, show that
they can fail (a careless workflow is flagged, an invalid one rejected), and pin down the
structure the retrain workflow relies on: it retrains one run at a time and reaches main only
through a pull request that changes dvc.lock and nothing else.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent  # the tools come with the dev extra, next to the interpreter
ZIZMOR = BIN / "zizmor"
CHECK_JSONSCHEMA = BIN / "check-jsonschema"
SCHEMA = "vendor.github-workflows"
SERIOUS = {"medium", "high"}
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
NAMES = sorted(path.name for path in WORKFLOWS.glob("*.y*ml"))  # every workflow gets the hardening checks
CHECKOUT = "actions/checkout@"


def run_tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


def load(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text())
    assert isinstance(workflow, dict), f"{path.name}: not a mapping"
    # YAML 1.1 reads the key `on` as the boolean True: give it back its name
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_id, step) for job_id, job in workflow["jobs"].items() for step in job.get("steps", [])]


def zizmor_findings(*inputs: Path) -> list[dict[str, Any]]:
    """zizmor's findings (offline, JSON); fails the test when zizmor itself fails."""
    result = run_tool(ZIZMOR, "--offline", "--no-progress", "--format", "json", *inputs)
    # exit codes: 0 nothing found, 10-14 findings (by highest severity), anything else an error
    assert result.returncode == 0 or 10 <= result.returncode <= 14, (
        f"zizmor failed ({result.returncode}): {result.stderr}"
    )
    return json.loads(result.stdout)


def severity(finding: dict[str, Any]) -> str:
    return str(finding["determinations"]["severity"]).lower()


def describe(findings: list[dict[str, Any]]) -> str:
    lines = []
    for finding in findings:
        where = finding["locations"][0]
        path = where["symbolic"]["key"]["Local"]["verbatim_path"]
        row = where["concrete"]["location"]["start_point"]["row"] + 1
        lines.append(f"{severity(finding)} {finding['ident']} at {path}:{row}: {finding['desc']}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict[str, Any]]:
    return {name: load(WORKFLOWS / name) for name in NAMES}


# --- the tools ---------------------------------------------------------------------------------


def test_the_two_workflows_are_there() -> None:
    assert {"ci.yml", "retrain.yml"} <= set(NAMES)


def test_workflows_match_githubs_schema() -> None:
    result = run_tool(CHECK_JSONSCHEMA, "--builtin-schema", SCHEMA, *(WORKFLOWS / name for name in NAMES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_of_medium_or_high_severity() -> None:
    serious = [f for f in zizmor_findings(WORKFLOWS) if severity(f) in SERIOUS and not f["ignored"]]
    assert not serious, "zizmor --offline:\n" + describe(serious)


CARELESS = """\
name: careless
on: push
permissions:
  contents: write
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.head_commit.message }}"
"""


def test_zizmor_flags_a_careless_workflow(tmp_path: Path) -> None:
    path = tmp_path / ".github" / "workflows" / "careless.yml"
    path.parent.mkdir(parents=True)
    path.write_text(CARELESS)
    serious = [f for f in zizmor_findings(path) if severity(f) in SERIOUS]
    assert serious, "zizmor found nothing serious in a careless workflow"
    idents = {f["ident"] for f in serious}
    assert {"unpinned-uses", "artipacked"} <= idents, describe(serious)
    # ...and the same file passes the schema: the two tools check different things
    assert run_tool(CHECK_JSONSCHEMA, "--builtin-schema", SCHEMA, path).returncode == 0


def test_the_schema_rejects_an_invalid_workflow(tmp_path: Path) -> None:
    path = tmp_path / "invalid.yml"
    path.write_text("name: invalid\njobs:\n  - runs-on: ubuntu-latest\n    steps: [{run: 'true'}]\n")
    result = run_tool(CHECK_JSONSCHEMA, "--builtin-schema", SCHEMA, path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "invalid.yml" in result.stdout + result.stderr


def test_make_lint_runs_both_checks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert f"check-jsonschema --builtin-schema {SCHEMA} .github/workflows/*.yml" in lint
    assert "zizmor --offline --min-severity medium .github/workflows" in lint


# --- hardening, both workflows ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_action_is_pinned_to_a_commit_with_its_version_named(name: str, workflows) -> None:
    uses = [step["uses"] for _, step in steps(workflows[name]) if "uses" in step]
    assert uses
    assert [ref for ref in uses if not SHA_PIN.match(ref)] == []
    # the comment keeps the pin readable (and lets update tools find the version)
    lines = [line for line in (WORKFLOWS / name).read_text().splitlines() if re.match(r"\s*-?\s*uses:", line)]
    assert [line for line in lines if not re.search(r"@[0-9a-f]{40} # v\d+(\.\d+)*$", line)] == []


def test_one_action_one_pin_across_workflows(workflows) -> None:
    pins: dict[str, set[str]] = {}
    for workflow in workflows.values():
        for _, step in steps(workflow):
            if "uses" in step:
                action, ref = step["uses"].split("@")
                pins.setdefault(action, set()).add(ref)
    assert {action: refs for action, refs in pins.items() if len(refs) > 1} == {}


@pytest.mark.parametrize("name", NAMES)
def test_checkout_never_persists_credentials(name: str, workflows) -> None:
    checkouts = [step for _, step in steps(workflows[name]) if step.get("uses", "").startswith(CHECKOUT)]
    assert checkouts
    for step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False, step


@pytest.mark.parametrize("name", NAMES)
def test_no_token_scope_unless_a_job_asks(name: str, workflows) -> None:
    workflow = workflows[name]
    assert workflow["permissions"] == {}
    for job_id, job in workflow["jobs"].items():
        assert isinstance(job.get("permissions"), dict), f"{name}: job {job_id} declares no permissions"
        assert job.get("timeout-minutes"), f"{name}: job {job_id} has no timeout"


@pytest.mark.parametrize("name", NAMES)
def test_no_expression_is_expanded_inside_a_script(name: str, workflows) -> None:
    scripts = [(job_id, step["run"]) for job_id, step in steps(workflows[name]) if "run" in step]
    assert scripts
    assert [(job_id, script) for job_id, script in scripts if "${{" in script] == []


# --- ci.yml -------------------------------------------------------------------------------------


def test_ci_runs_the_readme_test_command_and_cancels_superseded_runs(workflows) -> None:
    ci = workflows["ci.yml"]
    assert set(ci["on"]) == {"push", "pull_request"}
    (job,) = ci["jobs"].values()
    assert job["permissions"] == {"contents": "read"}
    assert [step["run"] for step in job["steps"] if "run" in step] == ["bash .ci/run"]
    assert ci["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in ci["concurrency"]["group"]


# --- retrain.yml --------------------------------------------------------------------------------


def test_retrain_triggers(workflows) -> None:
    on = workflows["retrain.yml"]["on"]
    assert set(on) == {"push", "workflow_dispatch", "schedule"}
    assert on["push"]["branches"] == ["main"]
    assert on["push"]["paths"] == ["data/raw.dvc"]
    assert [entry["cron"] for entry in on["schedule"]] and len(on["schedule"]) == 1


def test_retrains_never_race(workflows) -> None:
    concurrency = workflows["retrain.yml"]["concurrency"]
    assert concurrency["group"]
    assert "${{" not in concurrency["group"]  # one group for every ref: the registry is shared
    assert concurrency["cancel-in-progress"] is False


def test_retrain_runs_the_retrain_script_and_records_its_outcome(workflows) -> None:
    job = workflows["retrain.yml"]["jobs"]["retrain"]
    assert job["permissions"] == {"contents": "read"}
    (step,) = [step for step in job["steps"] if "bash scripts/retrain.sh" in step.get("run", "")]
    assert step["id"] == "retrain"
    script = step["run"]
    assert "set +e" in script and "$GITHUB_OUTPUT" in script
    assert '[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]' in script  # 3, the champion kept, is no failure
    assert "make retrain" not in script  # make would report the 3 as 2
    assert job["outputs"]["outcome"] == "${{ steps.retrain.outputs.outcome }}"
    # the stores come from the repository's secrets and variables, at run time
    assert step["env"]["CTCID_MLFLOW_TRACKING_URI"] == "${{ secrets.CTCID_MLFLOW_TRACKING_URI }}"
    assert step["env"]["CTCID_TUNE_STORAGE"] == "${{ secrets.CTCID_TUNE_STORAGE }}"
    assert step["env"]["CTCID_MLFLOW_ARTIFACT_LOCATION"] == "${{ vars.CTCID_MLFLOW_ARTIFACT_LOCATION }}"
    (remote,) = [s for s in job["steps"] if "dvc remote add" in s.get("run", "")]
    assert "--local" in remote["run"]  # .dvc/config.local: the URL is never committed
    assert remote["env"]["DVC_REMOTE_URL"] == "${{ vars.DVC_REMOTE_URL }}"
    names = [step.get("uses", step.get("run", "")) for step in job["steps"]]
    assert names.index(step["run"]) < next(i for i, n in enumerate(names) if "dvc push" in n)
    summary = [s for s in job["steps"] if "$GITHUB_STEP_SUMMARY" in s.get("run", "")]
    assert summary and summary[0]["if"] == "always()"
    upload = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload and "promoted" in upload[0]["if"] and "dvc.lock" in upload[0]["with"]["path"].split()


def test_the_new_lock_reaches_main_only_through_a_pull_request(workflows) -> None:
    jobs = workflows["retrain.yml"]["jobs"]
    propose = jobs["propose"]
    assert propose["needs"] == "retrain"
    assert propose["if"] == "needs.retrain.outputs.outcome == 'promoted'"
    assert propose["permissions"] == {"contents": "write", "pull-requests": "write"}
    # only the propose job may write, and no job pushes anywhere else
    assert [job_id for job_id, job in jobs.items() if "write" in job["permissions"].values()] == ["propose"]
    scripts = "\n".join(step["run"] for _, step in steps(workflows["retrain.yml"]) if "run" in step)
    adds = re.findall(r"\bgit add\b([^\n]*)", scripts)
    assert adds and all(args.split() in (["dvc.lock"], ["--", "dvc.lock"]) for args in adds), adds
    assert "git commit -a" not in scripts and "git add -A" not in scripts and "git add ." not in scripts
    pushes = re.findall(r"\bgit push\b([^\n]*)", scripts)
    assert pushes == [' origin "HEAD:refs/heads/$branch"']
    assert 'branch="retrain/$GITHUB_RUN_ID"' in scripts
    assert "gh pr create" in scripts
    (token_step,) = [step for step in propose["steps"] if "GH_TOKEN" in step.get("env", {})]
    assert token_step["env"]["GH_TOKEN"] == "${{ github.token }}"
