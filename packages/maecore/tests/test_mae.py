"""The MAE model: every mask kind, padding, loss on masked tokens only, encode, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from maecore import masking as M
from maecore.errors import ConfigError, DataError
from maecore.models import MaskedAutoencoder, create_model, list_models, load_pretrained
from maecore.models.transformer import Transformer


def _model(**kw) -> MaskedAutoencoder:
    torch.manual_seed(0)
    return create_model("mae_vit_tiny", ndim=2, group_channels=[2, 1], patch_size=4, **kw)


def _batch(b: int = 3) -> dict:
    x = torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    gp = torch.zeros(b, 2, dtype=torch.bool)
    gp[1, 1] = True  # sample 1 lacks group 1
    return {"x": x, "group_pad": gp}


KINDS = {
    "random": {}, "block": {"block": 2}, "tube": {}, "group_budget": {"alpha": 1.0},
    "group_drop": {"drop_prob": 0.5}, "noise": {"color": "green"}, "loss_guided": {"hard_fraction": 0.5},
}


@pytest.mark.parametrize("kind", KINDS)
def test_forward_every_mask_kind(kind):
    model = _model(mask={"kind": kind, "ratio": 0.75, **KINDS[kind]})
    out = model(_batch(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.pred.shape == (3, 32, 32)  # widest group: 2 channels x 4 x 4
    assert not (out.mask & out.pad).any()
    assert out.pad[1, 16:].all() and not out.pad[0].any()
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_loss_depends_only_on_masked_tokens():
    model = _model()
    batch = _batch()
    tokens = model.tokenizer.tokens(batch)
    masking = M.random_masking(tokens.pad, 0.75, torch.Generator().manual_seed(0))
    pred = model.forward_decoder(model.forward_encoder(tokens, masking), tokens, masking)
    target = model.tokenizer.targets(batch)
    base = model.forward_loss(pred, target, tokens, masking)
    changed = target.clone()
    changed[~masking.mask] += 100.0  # visible and padded tokens
    assert torch.equal(model.forward_loss(pred, changed, tokens, masking), base)
    changed[masking.mask] += 1.0
    assert not torch.equal(model.forward_loss(pred, changed, tokens, masking), base)


def test_sample_made_only_of_padding_gives_no_nan():
    model = _model()
    batch = _batch()
    batch["group_pad"][2] = True
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and torch.isfinite(out.pred).all()


def test_decoder_puts_visible_tokens_back_in_place():
    model = _model().eval()
    batch = {"x": torch.randn(2, 3, 16, 16)}
    tokens = model.tokenizer.tokens(batch)
    masking = M.random_masking(tokens.pad, 0.5, torch.Generator().manual_seed(3))
    latent = torch.randn(2, masking.ids_keep.shape[1], model.embed_dim)
    # reference: MAE's concatenate-and-unshuffle
    y = model.decoder_embed(latent)
    l = tokens.pad.shape[1]
    mask_tokens = model.mask_token.expand(2, l - y.shape[1], -1)
    cat = torch.cat([y, mask_tokens], 1)
    ref = torch.gather(cat, 1, masking.ids_restore[..., None].expand(-1, -1, y.shape[-1]))
    captured = {}
    model.decoder.register_forward_pre_hook(lambda mod, args: captured.setdefault("x", args[0]))
    model.forward_decoder(latent, tokens, masking)
    extra = model.decoder_pos(tokens.pos) + model.decoder_group(tokens.group)
    assert torch.allclose(captured["x"] - extra, ref, atol=1e-6)


def test_encode_with_a_group_subset_ignores_the_other_groups():
    model = _model().eval()
    batch = _batch()
    emb = model.encode(batch, groups=["g0"])
    other = {**batch, "x": batch["x"].clone()}
    other["x"][:, 2] += 5.0  # group g1 is channel 2
    assert torch.allclose(model.encode(other, groups=["g0"]), emb)
    assert not torch.allclose(model.encode(other), model.encode(batch))
    with pytest.raises(ValueError, match=r"unknown group 'nir'; this model's groups are \['g0', 'g1'\]"):
        model.encode(batch, groups=["nir"])


def test_padding_keys_do_not_change_real_token_outputs():
    enc = Transformer(16, 2, 4).eval()
    x = torch.randn(1, 5, 16)
    longer = torch.cat([x, torch.randn(1, 3, 16)], 1)
    pad = torch.tensor([[False] * 5 + [True] * 3])
    assert torch.allclose(enc(longer, pad)[:, :5], enc(x), atol=1e-5)


def test_grad_checkpointing_gives_the_same_loss_and_gradients():
    batch = _batch()
    grads = []
    for ckpt in (False, True):
        model = _model(grad_checkpointing=ckpt)
        out = model(batch, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        grads.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert torch.allclose(grads[0][0], grads[1][0])
    for n, g in grads[0][1].items():
        assert torch.allclose(g, grads[1][1][n], atol=1e-6), n


def test_loss_falls_on_smooth_images():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    g = torch.Generator().manual_seed(0)
    f = torch.rand(128, 3, 2, generator=g) * 0.5
    x = torch.sin(f[..., :1, None] * yy + f[..., 1:, None] * xx)
    model = create_model("mae_vit_tiny", ndim=2, group_channels=[3], patch_size=4, mask={"kind": "random", "ratio": 0.5})
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(60):
        out = model({"x": x[torch.randint(0, 128, (32,), generator=g)]}, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:5]) / 5


def test_mask_config_errors():
    with pytest.raises(ValueError, match=r"mask kind must be one of .*got 'checker'"):
        _model(mask={"kind": "checker"})
    with pytest.raises(ValueError, match=r"mask ratio must be in \[0, 1\), got 1.5"):
        _model(mask={"kind": "random", "ratio": 1.5})
    with pytest.raises(KeyError, match=r"unknown loss 'huber'; known losses: chamfer, grid_alpha_mse, l1, mse"):
        _model(loss="huber")


def test_registry_errors_list_names():
    assert {"mae_vit_tiny", "mae_vit_base"} <= set(list_models())
    with pytest.raises(ConfigError, match=r"unknown model 'vit_giant'; known models: .*mae_vit_base"):
        create_model("vit_giant")
    with pytest.raises(ConfigError, match=r"has no argument\(s\) \['depthh'\]; valid arguments: .*depth"):
        create_model("mae_vit_tiny", depthh=3)


def test_vit_base_matches_the_paper_size():
    model = create_model("mae_vit_base", ndim=2, group_channels=[3], patch_size=16)
    enc = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("encoder.", "tokenizer.")))
    assert math.isclose(enc / 1e6, 85.8, abs_tol=0.5)  # ViT-B/16 encoder without head: ~86 M


def test_export_round_trip_without_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model = _model(mask={"kind": "group_budget", "ratio": 0.75})
    model.meta = {"bands": ["a", "b", "c"], "mean": [0.1, 0.2, 0.3]}
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model"] == "mae_vit_tiny" and cfg["kwargs"]["group_channels"] == [2, 1]
    raw = (tmp_path / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8 : 8 + header_len])  # a safetensors header, not a pickle
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must not be used"))
    loaded = load_pretrained(tmp_path)
    assert loaded.meta == model.meta
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_export_load_errors(tmp_path: Path):
    with pytest.raises(DataError, match=r"expected an exported model folder with config.json and model.safetensors, found no config.json"):
        load_pretrained(tmp_path)
    _model().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(DataError, match=r"config.json: expected valid JSON, found a parse error"):
        load_pretrained(tmp_path / "m")
    _model().save_pretrained(tmp_path / "w")
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    cfg["kwargs"]["group_channels"] = [1, 1, 1]
    (tmp_path / "w" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match=r"model.safetensors: expected the weights of 'mae_vit_tiny'"):
        load_pretrained(tmp_path / "w")
    (tmp_path / "w" / "model.safetensors").unlink()
    with pytest.raises(DataError, match=r"found no model.safetensors"):
        load_pretrained(tmp_path / "w")
