"""Registered models: forward contract, lead-drop masking, synthesis masking and learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiomae.leads import CANONICAL_LEADS
from cardiomae.tasks import predict_leads
from maecore.models import create_model, list_models


def _batch(b: int = 2, g: int = 13, t: int = 500, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    valid = torch.ones(b, g, t, dtype=torch.bool)
    valid[:, 3:6] = False  # three absent leads
    valid[0, 1, 100:160] = False  # a gap
    x = torch.randn(b, g, t, generator=gen) * valid
    return {"x": x, "valid": valid, "group_pad": ~valid.any(-1)}


@pytest.mark.parametrize("name", list_models("cardiomae"))
def test_registered_models_forward(name: str):
    model = create_model(name)
    assert model.tokenizer.group_names == list(CANONICAL_LEADS) and model.tokenizer.patch == (25,)
    batch = _batch()
    out = model(batch, generator=torch.Generator().manual_seed(0))
    # slots absent from the whole batch (3, 4, 5) are left out of the sequence: 10 slots x 20 patches
    assert torch.isfinite(out.loss) and out.pred.shape == (2, 10 * 20, 25)
    tokens = model.tokenizer.tokens(batch)
    assert tokens.group[0].reshape(10, 20)[:, 0].tolist() == [0, 1, 2, *range(6, 13)]
    pad = out.pad.reshape(2, 10, 20)
    assert pad[0, 1, 4:7].all() and not pad[0, 1, 7] and not pad[1].any()  # the gap: patches 4-6 of II
    assert not (out.mask & out.pad).any()  # padding is never scored
    full = model.tokenizer.untokenize(out.pred, batch)
    assert full.shape == (2, 13, 500) and (full[:, 3:6] == 0).all()
    emb = model.encode(batch, groups=["I", "II"])
    assert emb.shape == (2, model.embed_dim) and torch.isfinite(emb).all()


def test_csfm_tiny_is_csfm_tiny_sized():
    model = create_model("cardiomae_csfm_tiny")
    enc = sum(p.numel() for n, p in model.encoder.named_parameters())
    assert model.embed_dim == 768 and len(model.encoder.blocks) == 6
    assert model.encoder.blocks[0].mlp[0].out_features == 1024
    assert 23e6 < enc < 25e6


def test_lead_drop_hides_whole_leads():
    model = create_model("cardiomae_tiny", mask_ratio=0.0, lead_drop=0.9)
    batch = _batch(b=8)
    out = model(batch, generator=torch.Generator().manual_seed(1))
    m = out.mask.reshape(8, 10, 20)
    p = out.pad.reshape(8, 10, 20)
    real = ~p
    for i in range(8):
        for g in range(10):
            if real[i, g].any():  # a present lead is either hidden whole or not at all
                assert m[i, g][real[i, g]].all() or not m[i, g].any()
        assert (real[i] & ~m[i]).any()  # at least one lead stays visible
    assert m.any()


def test_synthesis_never_sees_the_wanted_leads():
    model = create_model("cardiomae_tiny").eval()
    batch = _batch(b=1)
    want = [CANONICAL_LEADS.index("V5")]
    a = predict_leads(model, batch, want)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["x"][:, want] = 100.0
    np.testing.assert_allclose(predict_leads(model, changed, want)[:, want], a[:, want], atol=1e-5)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["x"][:, 0] += 1.0
    assert not torch.allclose(predict_leads(model, changed, want)[:, want], a[:, want])


def test_pretraining_learns_a_cross_lead_relation():
    """V5 = 0.6 II - 0.1 II(t - 40 ms): after 40 steps the synthesis of V5 from II is much better than
    predicting zero (the same-time lead mix learns fast; without it this takes hundreds of steps)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    g, t = 13, 250
    ii_slot, v5_slot = CANONICAL_LEADS.index("II"), CANONICAL_LEADS.index("V5")

    def make(n: int) -> dict[str, torch.Tensor]:
        ii = rng.standard_normal((n, t + 10)).cumsum(1)
        ii = (ii - ii.mean(1, keepdims=True)) / ii.std(1, keepdims=True)
        x = np.zeros((n, g, t), np.float32)
        x[:, ii_slot] = ii[:, 10:]
        x[:, v5_slot] = 0.6 * ii[:, 10:] - 0.1 * ii[:, :-10]
        valid = np.zeros((n, g, t), bool)
        valid[:, [ii_slot, v5_slot]] = True
        v = torch.from_numpy(valid)
        return {"x": torch.from_numpy(x), "valid": v, "group_pad": ~v.any(-1)}

    model = create_model("cardiomae_tiny", mask_ratio=0.5, lead_drop=0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(40):
        out = model(make(16), generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    test = make(8)
    pred = predict_leads(model.eval(), test, [v5_slot])[:, v5_slot]
    truth = test["x"][:, v5_slot]
    assert float(((pred - truth) ** 2).mean()) < 0.3 * float((truth**2).mean())
