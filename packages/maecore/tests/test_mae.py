"""The MAE model: every mask kind, padding, loss on masked tokens only, decoder scatter, encode,
gradient checkpointing, and a loss that falls on a tiny dataset."""

from __future__ import annotations

import pytest
import torch

from maecore import masking as M
from maecore.models import create_model
from maecore.models import transformer as T
from maecore.models.mae import MASK_KINDS
from maecore.models.transformer import Transformer
from maecore.tokens import Tokens

KINDS = {
    "random": {},
    "block": {"block": 2},
    "tube": {},
    "group_budget": {"alpha": 1.0},
    "group_drop": {"drop_prob": 0.5},
    "noise": {"color": "green", "sigma": 1.0},
    "loss_guided": {"hard_fraction": 0.5},
}


def test_every_mask_kind_is_covered():
    assert set(KINDS) == set(MASK_KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_every_mask_kind(kind, make_model, image_batch):
    model = make_model(mask={"kind": kind, "ratio": 0.75, **KINDS[kind]})
    out = model(image_batch, generator=torch.Generator().manual_seed(0))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and out.loss > 0
    assert out.pred.shape == (3, 32, 32)  # 2 groups x 16 patches; widest group: 2 channels x 4 x 4
    assert torch.equal(out.target, model.tokenizer.targets(image_batch))
    assert out.pad[1, 16:].all() and not out.pad[1, :16].any() and not out.pad[[0, 2]].any()
    assert not (out.mask & out.pad).any()
    assert out.mask[0].any() and (~out.mask & ~out.pad).any(1).all()  # something hidden, something seen
    assert out.latent.shape[0] == 3 and out.latent.shape[2] == 64
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kind", KINDS)
def test_sample_made_only_of_padding_gives_finite_output(kind, make_model, image_batch):
    model = make_model(mask={"kind": kind, "ratio": 0.75, **KINDS[kind]})
    image_batch["group_pad"][2] = True  # every group of sample 2 absent
    out = model(image_batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and torch.isfinite(out.pred).all()
    assert out.pad[2].all() and not out.mask[2].any()
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_batch_made_only_of_padding_scores_nothing(make_model, image_batch):
    model = make_model()
    image_batch["group_pad"][:] = True
    out = model(image_batch, generator=torch.Generator().manual_seed(0))
    assert out.loss.item() == 0.0 and torch.isfinite(out.pred).all()
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _fixed_pass(model, batch, ratio=0.75, seed=0):
    tokens = model.tokenizer.tokens(batch)
    masking = M.random_masking(tokens.pad, ratio, torch.Generator().manual_seed(seed))
    pred = model.forward_decoder(model.forward_encoder(tokens, masking), tokens, masking)
    return tokens, masking, pred


@pytest.mark.parametrize(("loss", "norm_pix"), [("mse", False), ("mse", True), ("l1", False)])
def test_loss_depends_only_on_masked_tokens(loss, norm_pix, make_model, image_batch):
    model = make_model(loss=loss, norm_pix=norm_pix)
    tokens, masking, pred = _fixed_pass(model, image_batch)
    target = model.tokenizer.targets(image_batch)
    base = model.forward_loss(pred, target, tokens, masking)
    changed = target.clone()
    changed[~masking.mask] = torch.randn_like(changed[~masking.mask]) * 100  # visible and padded tokens
    assert torch.equal(model.forward_loss(pred, changed, tokens, masking), base)
    changed_pred = pred.clone()
    changed_pred[~masking.mask] = 1e4
    assert torch.equal(model.forward_loss(changed_pred, target, tokens, masking), base)
    changed[masking.mask] += torch.randn_like(changed[masking.mask])  # not a constant: norm_pix would undo it
    assert not torch.allclose(model.forward_loss(pred, changed, tokens, masking), base)


def test_loss_ignores_target_columns_a_narrow_group_does_not_have(make_model, image_batch):
    model = make_model()
    tokens, masking, pred = _fixed_pass(model, image_batch)
    target = model.tokenizer.targets(image_batch)
    base = model.forward_loss(pred, target, tokens, masking)
    garbage = pred.clone()
    garbage[:, 16:, 16:] = 1e4  # group 1 has one channel: only its first 16 columns exist
    assert torch.equal(model.forward_loss(garbage, target, tokens, masking), base)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_difficulty_target_ignores_columns_a_narrow_group_does_not_have(norm_pix, make_model, image_batch):
    model = make_model(mask={"kind": "loss_guided", "ratio": 0.5, "hard_fraction": 1.0}, norm_pix=norm_pix)
    tokens, masking, pred = _fixed_pass(model, image_batch, ratio=0.5)
    target = model.tokenizer.targets(image_batch)
    loss = torch.zeros(())
    _, base = model._difficulty_loss(loss, pred, target, tokens, masking)
    garbage = pred.clone()
    garbage[:, 16:, 16:] = torch.randn(3, 16, 16) * 100
    _, other = model._difficulty_loss(loss, garbage, target, tokens, masking)
    assert torch.allclose(other["difficulty_loss"], base["difficulty_loss"])


def test_difficulty_target_uses_normalised_targets_with_norm_pix(make_model, image_batch):
    model = make_model(mask={"kind": "loss_guided", "ratio": 0.5}, norm_pix=True)
    tokens, masking, pred = _fixed_pass(model, image_batch, ratio=0.5)
    target = model.tokenizer.targets(image_batch)
    scale = torch.rand(3, 32, 1, generator=torch.Generator().manual_seed(0)) * 5 + 0.5
    loss = torch.zeros(())
    _, base = model._difficulty_loss(loss, pred, target, tokens, masking)
    _, rescaled = model._difficulty_loss(loss, pred, target * scale + 3.0, tokens, masking)  # same per-token shape
    assert torch.allclose(rescaled["difficulty_loss"], base["difficulty_loss"], rtol=1e-4)


def test_loss_guided_trains_its_difficulty_predictor(make_model, image_batch):
    model = make_model(mask={"kind": "loss_guided", "ratio": 0.5})
    out = model(image_batch, generator=torch.Generator().manual_seed(0))
    assert out.extras["difficulty_loss"] > 0
    out.loss.backward()
    assert model.difficulty.weight.grad.abs().sum() > 0


def test_decoder_scatter_matches_mae_unshuffle(make_model):
    model = make_model().eval()
    batch = {"x": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))}  # no padding
    tokens = model.tokenizer.tokens(batch)
    masking = M.random_masking(tokens.pad, 0.5, torch.Generator().manual_seed(3))
    latent = torch.randn(2, masking.ids_keep.shape[1], model.embed_dim, generator=torch.Generator().manual_seed(4))
    # reference (He et al.): append mask tokens to the visible ones, then unshuffle with ids_restore
    with torch.no_grad():
        y = model.decoder_embed(latent)
        mask_tokens = model.mask_token.expand(2, tokens.pad.shape[1] - y.shape[1], -1)
        ref = torch.gather(torch.cat([y, mask_tokens], 1), 1, masking.ids_restore[..., None].expand(-1, -1, y.shape[-1]))
        ref = ref + model.decoder_pos(tokens.pos) + model.decoder_group(tokens.group)
    captured = {}
    model.decoder.register_forward_pre_hook(lambda mod, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        model.forward_decoder(latent, tokens, masking)
    assert torch.allclose(captured["x"], ref, atol=1e-6)


def test_decoder_scatter_with_padding_and_filler(make_model, image_batch):
    model = make_model().eval()
    tokens = model.tokenizer.tokens(image_batch)
    masking = M.random_masking(tokens.pad, 0.5, torch.Generator().manual_seed(3))
    assert masking.keep_pad.any()  # sample 1 has fewer visible tokens: filler slots
    latent = torch.randn(3, masking.ids_keep.shape[1], model.embed_dim)
    captured = {}
    model.decoder.register_forward_pre_hook(lambda mod, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        model.forward_decoder(latent, tokens, masking)
        full = captured["x"] - model.decoder_pos(tokens.pos) - model.decoder_group(tokens.group)
        y = model.decoder_embed(latent)
    vis = masking.visible
    for b in range(3):
        n = int(vis[b].sum())
        assert torch.allclose(full[b, masking.ids_keep[b, :n]], y[b, :n], atol=1e-5)
        assert torch.allclose(full[b, ~vis[b]], model.mask_token[0].expand(int((~vis[b]).sum()), -1), atol=1e-5)


def test_encode_with_a_group_subset_ignores_the_other_groups(make_model, image_batch):
    model = make_model().eval()
    with torch.no_grad():
        emb = model.encode(image_batch, groups=["g0"])
        other = {**image_batch, "x": image_batch["x"].clone()}
        other["x"][:, 2] = torch.randn(3, 16, 16) * 5  # group g1 is channel 2
        other["x"][0, 2, :4, :4] = float("nan")
        assert emb.shape == (3, 64)
        assert torch.equal(model.encode(other, groups=["g0"]), emb)
        assert torch.equal(model.encode(other, groups=[0]), emb)  # by id
        assert not torch.allclose(model.encode(other, groups=["g1"]), model.encode(image_batch, groups=["g1"]))
        assert not torch.allclose(model.encode(image_batch), emb)  # all groups differ from g0 alone


def test_encode_tokens_marks_other_groups_as_padding(make_model, image_batch):
    model = make_model().eval()
    with torch.no_grad():
        emb, pad = model.encode_tokens(image_batch, groups=["g1"])
    assert pad[:, :16].all() and pad[1].all() and not pad[[0, 2], 16:].any()
    assert torch.equal(emb[pad], torch.zeros_like(emb[pad]))
    assert (emb[~pad].abs().sum(-1) > 0).all()


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (["nir"], r"unknown group 'nir'; this model's groups are \['g0', 'g1'\]"),
        (["g0", "G1"], r"unknown group 'G1'; this model's groups are \['g0', 'g1'\]"),
        ([2], r"group id 2 out of range 0..1"),
        ([-1], r"group id -1 out of range 0..1"),
        ([], r"groups must name at least one of this model's groups \['g0', 'g1'\] \(or be None for all\)"),
        ([True], r"unknown group True; this model's groups are \['g0', 'g1'\]"),
    ],
)
def test_encode_unknown_groups_raise(groups, message, make_model, image_batch):
    with pytest.raises(ValueError, match=message):
        make_model().encode(image_batch, groups=groups)


@pytest.mark.parametrize("where", ["end", "middle", "start"])
def test_padding_keys_do_not_change_real_token_outputs(where):
    torch.manual_seed(0)
    enc = Transformer(16, 2, 4).eval()
    x = torch.randn(1, 5, 16)
    extra = torch.randn(1, 3, 16) * 10
    parts = {"end": [x, extra], "start": [extra, x], "middle": [x[:, :2], extra, x[:, 2:]]}[where]
    longer = torch.cat(parts, 1)
    real = {"end": [0, 1, 2, 3, 4], "start": [3, 4, 5, 6, 7], "middle": [0, 1, 5, 6, 7]}[where]
    pad = torch.ones(1, 8, dtype=torch.bool)
    pad[0, real] = False
    with torch.no_grad():
        assert torch.allclose(enc(longer, pad)[:, real], enc(x), atol=1e-5)


def test_fully_padded_row_stays_finite():
    enc = Transformer(16, 1, 4).eval()
    with torch.no_grad():
        out = enc(torch.randn(2, 4, 16), torch.tensor([[False, True, True, True], [True] * 4]))
    assert torch.isfinite(out).all()


def test_encoder_filler_slots_do_not_change_a_samples_latent(make_model, image_batch):
    model = make_model().eval()
    one = {k: v[1:2] for k, v in image_batch.items()}  # sample 1 alone (group 1 absent): no filler
    with torch.no_grad():
        emb_batch, _ = model.encode_tokens(image_batch)
        emb_alone, _ = model.encode_tokens(one)
    assert torch.allclose(emb_batch[1], emb_alone[0], atol=1e-5)


def test_decoder_padded_tokens_do_not_change_real_predictions(make_model, image_batch):
    model = make_model().eval()
    tokens, masking, pred = _fixed_pass(model, image_batch, ratio=0.5, seed=1)
    # drop group 1 of sample 1 altogether (it is padding): the real predictions must not move
    keep = torch.arange(16)[None]
    short = Tokens(*(getattr(tokens, f)[1:2] for f in ("x", "pos", "group", "pad"))).select(keep)
    short_masking = M.finalize(masking.mask[1:2, :16], short.pad)
    with torch.no_grad():
        short_pred = model.forward_decoder(model.forward_encoder(short, short_masking), short, short_masking)
    assert torch.allclose(pred[1, :16], short_pred[0], atol=1e-5)


def test_grad_checkpointing_gives_the_same_loss_and_gradients(make_model, image_batch, monkeypatch):
    calls = []
    real = T.checkpoint
    monkeypatch.setattr(T, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    results = []
    for ckpt in (False, True):
        model = make_model(grad_checkpointing=ckpt)
        out = model(image_batch, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), grads))
        # every encoder and decoder block checkpointed once (the decoder holds most activations)
        n_blocks = len(model.encoder.blocks) + len(model.decoder.blocks)
        assert len(calls) == (0 if not ckpt else n_blocks) and n_blocks > len(model.encoder.blocks)
        calls.clear()
    assert torch.allclose(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys()
    for name, g in results[0][1].items():
        assert torch.allclose(g, results[1][1][name], atol=1e-6), name


def test_loss_falls_on_smooth_images():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    freq = torch.rand(64, 3, 2, generator=g) * 0.5
    offset = torch.rand(64, 3, 1, 1, generator=g) * 4 - 2  # per image and channel: only context reveals it
    x = torch.sin(freq[..., :1, None] * yy + freq[..., 1:, None] * xx) + offset  # [64, 3, 16, 16]
    model = create_model("mae_vit_tiny", ndim=2, group_channels=[3], patch_size=4, mask={"kind": "random", "ratio": 0.5})
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        idx = torch.randint(0, 64, (16,), generator=g)
        out = model({"x": x[idx]}, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    context_free = float(((x - x.mean((0, 2, 3), keepdim=True)) ** 2).mean())  # best guess without the image
    assert last < 0.5 * first, (first, last)
    assert last < 0.5 * context_free, (last, context_free)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"mask": {"kind": "checker"}}, ValueError, r"mask kind must be one of \('random', .*\), got 'checker'"),
        ({"mask": {"kind": "random", "ratio": 1.5}}, ValueError, r"mask ratio must be in \[0, 1\), got 1.5"),
        ({"mask": {"kind": "random", "ratio": -0.1}}, ValueError, r"mask ratio must be in \[0, 1\), got -0.1"),
        (
            {"mask": {"kind": "block", "ratio": 0.5, "blok": 2}},
            ValueError,
            r"mask kind 'block' takes no parameter\(s\) \['blok'\]; valid keys: kind, ratio, block",
        ),
        (
            {"mask": {"kind": "random", "alpha": 1.0}},
            ValueError,
            r"mask kind 'random' takes no parameter\(s\) \['alpha'\]; valid keys: kind, ratio$",
        ),
        ({"loss": "huber"}, KeyError, r"unknown loss 'huber'; known losses: chamfer, grid_alpha_mse, l1, mse"),
        ({"num_heads": 5}, ValueError, r"width 64 is not divisible by num_heads 5"),
        ({"depth": 0}, ValueError, r"depth must be >= 1, got 0"),
    ],
)
def test_construction_errors(overrides, error, message, make_model):
    with pytest.raises(error, match=message):
        make_model(**overrides)


def test_mask_strategy_errors_surface_at_forward(make_model, image_batch):
    model = make_model(mask={"kind": "noise", "ratio": 0.5, "color": "pink"})
    with pytest.raises(ValueError, match=r"noise color must be one of .*got 'pink'"):
        model(image_batch)


def test_pos_embed_error():
    from maecore.models.mae import PosEmbed

    with pytest.raises(ValueError, match=r"pos_embed must be 'sincos' or 'mlp', got 'rope'"):
        PosEmbed("rope", 2, 16)


def test_decoder_leaves_padding_out_and_real_tokens_decode_as_with_it(make_model, image_batch):
    """Packing the real tokens before the decoder changes nothing for them (padded keys are masked
    either way); padded positions predict 0. The reference decodes the whole padded sequence."""
    model = make_model().eval()
    # sample 1 lacks group 1 (fixture); samples 0 and 2: one unmeasured patch (in both groups)
    image_batch["x"][0, :, :4, :4] = float("nan")
    image_batch["x"][2, :, 8:12, 4:8] = float("nan")
    tokens = model.tokenizer.tokens(image_batch)
    assert tokens.pad.sum(1).tolist() == [2, 16, 2]  # so every row is packed: width 30 of 32
    masking = M.random_masking(tokens.pad, 0.75, torch.Generator().manual_seed(0))
    with torch.no_grad():
        latent = model.forward_encoder(tokens, masking)
        pred = model.forward_decoder(latent, tokens, masking)
        y = model.decoder_embed(latent)
        y = torch.where(masking.keep_pad[..., None], model.mask_token, y)
        full = model.mask_token.expand(*tokens.pad.shape, -1).clone()
        full = full.scatter(1, masking.ids_keep[..., None].expand_as(y), y)
        full = full + model.decoder_pos(tokens.pos) + model.decoder_group(tokens.group)
        full = model.decoder(full, tokens.pad)
    real = ~tokens.pad
    for g, head in enumerate(model.heads):
        sel = real & (tokens.group == g)
        assert torch.allclose(pred[sel], head(full[sel]), atol=1e-5), g
    assert (pred[tokens.pad] == 0).all()
