"""The gradnorm_frozen ablation: fixed task weights equal to the mean weights GradNorm used, same seed."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from utils.compare.strategies import mean_task_weights, resolve_strategies, strategy_spec, write_frozen_hyp


def _history(weights: list[tuple[float, float]]) -> dict:
    return {"epochs": [], "steps": [{"step": i, "weights": {"det": d, "view": v}} for i, (d, v) in enumerate(weights)]}


def test_mean_task_weights_over_the_optimizer_steps():
    assert mean_task_weights(_history([(1.0, 1.0), (1.8, 0.2), (1.9, 0.1)])) == pytest.approx({"det": 4.7 / 3,
                                                                                              "view": 13 / 30})
    assert mean_task_weights({"steps": []}) is None


def test_frozen_follows_its_source_and_needs_it():
    assert resolve_strategies(["gradnorm_frozen", "detection_only", "gradnorm"], []) == \
        ["detection_only", "gradnorm", "gradnorm_frozen"]
    with pytest.raises(ValueError, match="gradnorm_frozen needs gradnorm"):
        resolve_strategies(["detection_only", "gradnorm_frozen"], [])
    spec = strategy_spec("gradnorm_frozen")
    assert spec.script == "train.py" and spec.shared and spec.frozen_from == "gradnorm" and spec.balancer is None


def test_write_frozen_hyp_sets_the_means_and_keeps_the_rest(tmp_path: Path):
    template = tmp_path / "hyp_base.yaml"
    template.write_text(yaml.safe_dump({"lr0": 0.01, "det_task": 1.0, "view_task": 1.0, "mosaic": 0.0}))
    out = tmp_path / "hyp_gradnorm_frozen_s_s0.yaml"
    weights = write_frozen_hyp(_history([(1.9, 0.1), (1.7, 0.3)]), template, out, "gradnorm_s0")
    assert weights == pytest.approx({"det": 1.8, "view": 0.2})
    hyp = yaml.safe_load(out.read_text())
    assert hyp == pytest.approx({"lr0": 0.01, "det_task": 1.8, "view_task": 0.2, "mosaic": 0.0})
    assert out.read_text().startswith("# derived by compare.py")
    assert write_frozen_hyp({"steps": []}, template, tmp_path / "none.yaml", "gradnorm_s0") is None
    assert not (tmp_path / "none.yaml").exists()
