"""DDP on the CPU: two gloo processes train on disjoint data and end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from maecore.models import create_model

SCRIPT = Path(__file__).parent / "scripts" / "tiny_pretrain.py"
STEPS = 6


@pytest.mark.ddp
def test_two_process_ddp_ranks_see_disjoint_data_and_agree(tmp_path: Path):
    """Also: rank 1 alone gets an infinite loss (with finite gradients) at step 3; both ranks must
    skip that step, or their weights would part."""
    # Lightning's "ddp" re-launches sys.argv for rank 1: hence a script, not an in-process fit
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    run = tmp_path / "ddp"
    res = subprocess.run([sys.executable, str(SCRIPT), str(run), str(STEPS), "--devices", "2", "--inf-loss-at", "3:1"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    seen = [json.loads((run / f"rank{r}_indices.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == STEPS
    for b0, b1 in zip(*seen):  # each global batch is split: the ranks' halves share no sample
        assert len(b0) == len(b1) == 4 and not set(b0) & set(b1)
    r0, r1 = load_file(str(run / "rank0.safetensors")), load_file(str(run / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    for k in r0:  # different data, same weights: the gradients were averaged across ranks
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    torch.manual_seed(0)
    init = create_model("mae_vit_tiny", ndim=2, group_channels=[3], patch_size=4).state_dict()
    assert any(not torch.equal(init[k], r0[k]) for k in r0)  # and they did train
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["samples_per_s"] > 0 and summary["nonfinite_steps"] == 1
    assert (run / "export" / "model.safetensors").is_file()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STEPS
