"""The train stage is reproducible: the same crops, split and seed give the same model twice."""

from __future__ import annotations

from pathlib import Path

import torch

from ctcid.model.train import train_backbone
from ctcid.paths import StageInputs
from factory import tiny_params


def train_once(root: Path, inputs: dict[str, Path]) -> tuple[dict[str, torch.Tensor], bytes]:
    params = tiny_params(root, ["resnet18"], epochs=2)
    stage = StageInputs(inputs["crops"], inputs["manifest"], inputs["split"])
    outputs = train_backbone(
        params, "resnet18", stage, root / "models", root / "reports", show_progress=False
    )
    saved = torch.load(outputs.model_path, map_location="cpu", weights_only=True)
    return saved["state_dict"], outputs.oof_path.read_bytes()


def test_training_twice_from_the_same_inputs_gives_identical_weights(
    synthetic_stage_inputs: dict[str, Path], tmp_path: Path
) -> None:
    first, first_oof = train_once(tmp_path / "one", synthetic_stage_inputs)
    second, second_oof = train_once(tmp_path / "two", synthetic_stage_inputs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert first_oof == second_oof
