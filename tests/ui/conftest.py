"""Browser tests: the pages a user opens after `make run`, in headless Chromium, offline.

The project is the end-to-end tests' tiny one (tests/e2e_support.py: `dvc repro` of every stage),
and every server is started for real on a loopback port by the command the README gives: `ctcid
ui` (MLflow), `ctcid dashboard` (optuna-dashboard), `ctcid serve` (the Bento). Chromium is
Debian's (`make browser` installs it), driven by Playwright; no browser is downloaded.

No request leaves the machine: every page's requests pass a route that lets through loopback,
``file:`` and ``data:`` URLs only and records the rest, and Chromium's resolver maps every other
host to nothing. Each test leaves a screenshot in its temporary folder (kept by pytest; a failing
test's report names it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from e2e_support import _env, shared_build
from factory import free_port, wait_until_ok

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CTCID = str(Path(sys.executable).with_name("ctcid"))
LOCAL = re.compile(r"^(file:|data:|blob:|about:|https?://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$))")
# besides the request route: Chromium resolves no host but loopback, and phones nowhere home
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
VIEWPORT = {"width": 1400, "height": 900}


def find_chromium() -> str | None:
    """$CTCID_CHROMIUM, else the first Chromium on PATH (Debian's package: /usr/bin/chromium)."""
    named = os.environ.get("CTCID_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        reason = (
            "no Chromium found (looked for $CTCID_CHROMIUM, then " + ", ".join(CHROMIUM_NAMES) + " on PATH); "
            "install it with 'make browser' (Debian's chromium package)"
        )
        print(reason)
        pytest.skip(reason)
    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]  # root has no sandbox
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=args)
        yield launched
        launched.close()


@dataclass
class Tab:
    """A page of its own browser context, and what it tried to fetch from outside the machine."""

    page: object
    screenshot: Path
    external: list[str] = field(default_factory=list)

    def shoot(self) -> Path:
        self.page.screenshot(path=str(self.screenshot))
        return self.screenshot


@pytest.fixture
def tab(browser, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(60_000)
    tab = Tab(context.new_page(), tmp_path / f"{request.node.name}.png")

    def route(route) -> None:
        url = route.request.url
        if LOCAL.match(url):
            route.continue_()
        else:
            tab.external.append(url)
            route.abort("blockedbyclient")

    context.route("**/*", route)
    request.node.ui_tab = tab
    yield tab
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """After each test's body, pass or fail, a screenshot of its page; a failure's report names it."""
    outcome = yield
    report = outcome.get_result()
    tab = getattr(item, "ui_tab", None)
    if report.when != "call" or tab is None:
        return
    try:
        shot = tab.shoot()
    except Exception as error:  # the page or browser is gone: say so, keep the test's own failure
        report.sections.append(("screenshot", f"none: {error}"))
        return
    if report.failed:
        report.sections.append(("screenshot", str(shot)))


# --- the project and its servers ------------------------------------------------------------------


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project as `make run` leaves it (shared with tests/e2e)."""
    return shared_build(tmp_path_factory) / "project"


@dataclass(frozen=True)
class Started:
    url: str
    output: Path


def start(project: Path, args: list[str], ready: str, log: Path, timeout_s: float = 180) -> Iterator[Started]:
    """``ctcid <args> --port P`` in the project until ``ready`` answers; its process group stopped after."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [CTCID, *args, "--port", str(port)],
            cwd=project,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server's workers go with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(process, url + ready, timeout_s, log)
        yield Started(url, log)
    finally:
        try:
            os.killpg(process.pid, 15)
            process.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, 9)


@pytest.fixture(scope="session")
def mlflow_ui(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    yield from start(project, ["ui"], "/health", tmp_path_factory.mktemp("mlflow") / "ctcid-ui.log")


@pytest.fixture(scope="session")
def dashboard(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    log = tmp_path_factory.mktemp("dashboard") / "ctcid-dashboard.log"
    yield from start(project, ["dashboard"], "/api/studies", log)


@pytest.fixture(scope="session")
def service(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    yield from start(project, ["serve"], "/readyz", tmp_path_factory.mktemp("serve") / "ctcid-serve.log")
