"""DDP on the CPU: two gloo processes train, and both ranks end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "scripts" / "tiny_pretrain.py"


@pytest.mark.ddp
def test_two_process_ddp_ranks_agree_and_differ_from_single_process(tmp_path: Path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    ddp = tmp_path / "ddp"
    res = subprocess.run([sys.executable, str(SCRIPT), str(ddp), "6", "--devices", "2"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = load_file(str(ddp / "rank0.safetensors")), load_file(str(ddp / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    # gradients were averaged over both ranks' data: a single process on rank 0's slice differs
    single = tmp_path / "single"
    res = subprocess.run([sys.executable, str(SCRIPT), str(single), "6"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    s0 = load_file(str(single / "rank0.safetensors"))
    assert any(not torch.equal(s0[k], r0[k]) for k in r0)
    assert (ddp / "export" / "model.safetensors").is_file()
