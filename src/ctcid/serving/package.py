"""The package step: the registry's champion becomes a BentoML model and a Bento to serve it.

1. read ``models:/<name>@champion`` and the settings it was registered with (:class:`ServedModel`);
2. import it into the project's BentoML model store (``bentoml.mlflow.import_model``), labelled with
   the registry version, alias, run id and data hash, unless that version is packaged already;
3. build ``serving/bentofile.yaml`` into a Bento: the service, a wheel of this ``ctcid`` and the
   pinned requirements of ``requirements.lock``; the ``serving`` params become the Bento's build
   arguments, so the Bento keeps the limits it was built with;
4. write ``reports/package.json`` (what is packaged; the DVC stage's output).

Nothing is downloaded: the wheel is built from the working tree without build isolation.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ctcid.config.mlflow import MlflowParams
from ctcid.config.serving import ServingParams
from ctcid.config.stage import StageConfig
from ctcid.errors import CtcidError
from ctcid.paths import PACKAGE_FILE
from ctcid.registry_client import CHAMPION, RegistryClient, use_registry
from ctcid.serving.bento import METADATA_KEY, ServiceArgs, bento_name, find_model, listed
from ctcid.serving.served import ServedModel

SERVING_DIR = Path("serving")
BENTOFILE = "bentofile.yaml"
WHEELS = "wheels"  # inside SERVING_DIR (git-ignored): the bento's python.wheels


class PackageConfig(StageConfig):
    """What the package stage reads: the service's settings and which registered model it serves."""

    serving: ServingParams
    mlflow: MlflowParams


@dataclass(frozen=True)
class Packaged:
    model_name: str
    version: str
    alias: str
    bento_model: str
    bento: str
    reused_model: bool
    reused_bento: bool

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")
        return path

    def summary(self) -> str:
        """What ``ctcid package`` prints: the version, the Bento model and the Bento, reused or new."""
        model = "already packaged as" if self.reused_model else "imported as"
        return (
            f"{self.model_name} v{self.version} ({self.alias}) {model} {self.bento_model}; "
            f"Bento {self.bento}{' (unchanged)' if self.reused_bento else ''}. Start it: ctcid serve"
        )


def champion_served(params: PackageConfig) -> ServedModel:
    """The champion version and the settings stored with it; a clear error when there is none."""
    import mlflow

    registry = RegistryClient(params.mlflow)
    champion = registry.require_alias(
        CHAMPION,
        "run 'ctcid promote' (dvc repro) to move one through the gate, "
        "or 'ctcid promote --force --reason ...'",
    )
    use_registry(params.mlflow)
    uri = registry.model_uri(str(champion.version))
    info = registry.call(f"reading {uri}", lambda: mlflow.models.get_model_info(uri))
    return ServedModel.from_version(champion, CHAMPION, (info.metadata or {}).get("ctcid", {}))


def package(params: PackageConfig, reports_dir: Path, root: Path = Path(".")) -> Packaged:
    """Import the champion into BentoML's store (once per version) and build its Bento."""
    params = PackageConfig.project(params)  # whatever the caller holds, packaging reads only its keys
    import bentoml

    served = champion_served(params)
    model = find_model(served)
    reused_model = model is not None
    if model is None:
        uri = f"models:/{served.name}/{served.version}"
        model = bentoml.mlflow.import_model(
            bento_name(served.name),
            uri,
            labels=served.labels(),
            metadata={METADATA_KEY: served.model_dump(mode="json")},
        )
    args = ServiceArgs(**params.serving.model_dump(), model_tag=str(model.tag))
    bento, reused_bento = build_bento(root, served, args)
    packaged = Packaged(
        served.name, served.version, served.alias, str(model.tag), str(bento.tag), reused_model, reused_bento
    )
    packaged.write(reports_dir / PACKAGE_FILE)
    return packaged


def build_key(root: Path, args: ServiceArgs) -> str:
    """What makes a Bento: the service folder, the ctcid sources, the lock and the arguments."""
    digest = hashlib.sha256(json.dumps(args.model_dump(mode="json"), sort_keys=True).encode())
    files = sorted((root / SERVING_DIR).glob("*.*")) + sorted((root / "src" / "ctcid").rglob("*.py"))
    for path in [*files, root / "requirements.lock"]:
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def build_bento(root: Path, served: ServedModel, args: ServiceArgs) -> tuple[Any, bool]:
    import bentoml

    serving = root / SERVING_DIR
    if not (serving / BENTOFILE).is_file():
        raise CtcidError(f"{serving / BENTOFILE}: not found; run 'ctcid package' from the repository root")
    key = build_key(root, args)
    name = f"{bento_name(served.name)}-service"
    for existing in listed("bentos", name):
        if existing.info.labels.get("build_key") == key:
            return existing, True
    config = yaml.safe_load((serving / BENTOFILE).read_text())
    wheel = build_wheel(root, serving / WHEELS)
    python = dict(config.get("python") or {})
    python["wheels"] = [f"{WHEELS}/{wheel.name}"]
    labels = {
        **(config.get("labels") or {}),
        **{k: v for k, v in served.labels().items() if k != "backbone"},
        "build_key": key,
    }
    bento = bentoml.bentos.build(
        config["service"],
        name=name,
        labels=labels,
        description=config.get("description"),
        include=config.get("include"),
        exclude=config.get("exclude"),
        python=python,
        docker=config.get("docker"),
        build_ctx=str(serving),
        args=args.model_dump(mode="json"),
    )
    return bento, False


def build_wheel(root: Path, out: Path) -> Path:
    """A wheel of the ctcid in ``root``, built offline (no build isolation, no dependencies)."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("ctcid-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--wheel-dir",
                str(out),
                str(root.resolve()),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=scratch,
        )
    wheels = sorted(out.glob("ctcid-*.whl"))
    if done.returncode != 0 or not wheels:
        raise CtcidError(f"building the ctcid wheel for the Bento failed:\n{done.stderr[-2000:]}")
    return wheels[0]
