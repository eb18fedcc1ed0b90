"""Models and masking: every registered model's surface, padding, masking strategies, learning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maecore.models import create_model, list_models, load_pretrained
from maecore.tasks.data import collate_dict
from skelmae.data import SkeletonClips, expand, load_sequences
from skelmae.tokenizers import JointSegmentTokenizer, body_part_masking, frame_masking, motion_aware_masking
from skelmae.topology import PRESETS


@pytest.fixture(scope="module")
def clips() -> SkeletonClips:
    return SkeletonClips(load_sequences(expand(None), {"fps": 30}), 16, 8)


def _batch(clips: SkeletonClips, idx: list[int]) -> dict:
    return collate_dict([clips[i] for i in idx])


@pytest.mark.parametrize("name", list_models("skelmae"))
def test_every_registered_model(name: str, clips: SkeletonClips):
    torch.manual_seed(0)
    model = create_model(name)
    batch = _batch(clips, [0, 40])
    batch["valid"][1, 12:] = False  # a padded tail
    out = model(batch, generator=torch.Generator().manual_seed(0))
    tok = model.tokenizer
    s = 16 // tok.t_patch
    assert out.pred.shape == (2, s * 31, tok.target_dim) and torch.isfinite(out.loss)
    assert not (out.mask & out.pad).any() and out.pad[1].sum() == (16 - 12) // tok.t_patch * 31
    ratio = model.mask_cfg["ratio"]
    assert abs(out.mask[0].float().mean().item() - ratio) < 0.1
    out.loss.backward()
    assert model.encode(batch).shape == (2, model.embed_dim)


def test_padding_never_reaches_the_encoder(clips: SkeletonClips):
    for name in ("skelmae_graph_tiny", "skelmae_mamp_tiny"):
        model = create_model(name).eval()
        batch = _batch(clips, [3])
        batch["valid"][0, 8:, :5] = False
        other = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
        other["x"][0, 8:, :5] = 100.0  # values of unmeasured joints must not matter
        assert torch.allclose(model.encode(batch), model.encode(other), atol=1e-6), name


def test_masking_strategies():
    g = torch.Generator().manual_seed(0)
    pad = torch.zeros(4, 8 * 25, dtype=torch.bool)
    pad[0, -25:] = True
    m = frame_masking(pad, (8, 25), 0.5, g)
    hidden = m.mask.reshape(4, 8, 25)
    assert (hidden.all(-1) | ~hidden.any(-1)).all()  # whole segments
    assert hidden[1].all(-1).sum() == 4 and not (m.mask & pad).any()
    parts = torch.from_numpy(PRESETS["ntu25"].part_ids())
    m = body_part_masking(pad, (8, 25), parts, 0.4, g)
    hidden = m.mask.reshape(4, 8, 25)
    for p in range(5):
        sel = hidden[..., parts == p]
        assert (sel.all(-1) | ~sel.any(-1))[1:].all()  # whole body parts
    assert 0.3 < m.mask[1:].float().mean() < 0.41
    motion = torch.zeros(4, 200)
    motion[:, ::2] = 1.0  # half the tokens move
    m = motion_aware_masking(torch.zeros(4, 200, dtype=torch.bool), motion, 0.5, tau=0.25, generator=g)
    assert m.mask[:, ::2].float().mean() > 0.9 > 0.1 > m.mask[:, 1::2].float().mean()
    with pytest.raises(
        ValueError, match=r"mask kind must be one of \('random', 'joint', 'frame', 'body_part', 'motion'\), got 'ring'"
    ):
        create_model("skelmae_graph_tiny", mask_kind="ring")


def test_tokenizer_round_trip_and_motion(clips: SkeletonClips):
    tok = JointSegmentTokenizer(
        31, 3, 4, 16, PRESETS["cmu31"].part_ids().tolist(), PRESETS["cmu31"].part_names, target="position+motion"
    )
    batch = _batch(clips, [0, 1])
    target = tok.targets(batch)
    assert target.shape == (2, 4 * 31, 24)
    assert torch.equal(tok.untokenize(target, batch), batch["x"])
    motion = tok.motion(batch)
    assert torch.allclose(motion[:, 5], batch["x"][:, 5] - batch["x"][:, 4])
    assert torch.equal(tok.token_to_frames(torch.arange(124).expand(2, -1), batch)[0, 5, 3], torch.tensor(31 + 3))
    with pytest.raises(ValueError, match=r"clip length 18 must be a multiple of t_patch 4"):
        tok.tokens({"x": torch.zeros(1, 18, 31, 3)})
    with pytest.raises(ValueError, match=r"x must be \[B, T, 31, 3\]"):
        tok.tokens({"x": torch.zeros(1, 16, 25, 3)})


def test_graph_mae_learns_and_beats_the_visible_centroid_baseline(clips: SkeletonClips):
    torch.manual_seed(0)
    model = create_model("skelmae_graph_tiny", mask_kind="random", mask_ratio=0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(60):
        batch = _batch(clips, torch.randint(0, len(clips), (8,), generator=g).tolist())
        out = model(batch, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    model.eval()
    batch = _batch(clips, list(range(0, len(clips), 3)))
    with torch.no_grad():
        out = model(batch, generator=torch.Generator().manual_seed(99))
    hid = out.mask & ~out.pad
    ours = ((out.pred - out.target) ** 2).sum(-1)[hid].mean()
    # baseline: each hidden joint at the centroid of the visible joints of its frame(s)
    tgt = out.target.reshape(*out.target.shape[:2], -1, 3)
    vis = (~out.mask & ~out.pad).reshape(len(tgt), -1, 31)
    seg = tgt.reshape(len(tgt), -1, 31, tgt.shape[2], 3)
    w = vis[..., None, None].float()
    centroid = (seg * w).sum(2, keepdim=True) / w.sum(2, keepdim=True).clamp(min=1)
    base = ((centroid - seg) ** 2).sum((-1, -2)).reshape(len(tgt), -1)[hid].mean()
    assert ours < 0.5 * base


def test_export_round_trip(tmp_path: Path, clips: SkeletonClips):
    for name in ("skelmae_graph_tiny", "skelmae_mamp_tiny"):
        model = create_model(name, topology=PRESETS["cmu31"].to_dict()).eval()
        model.meta = {"fps": 30.0}
        model.save_pretrained(tmp_path / name)
        loaded = load_pretrained(tmp_path / name).eval()
        batch = _batch(clips, [0, 5])
        assert torch.equal(loaded.encode(batch), model.encode(batch)) and loaded.meta["fps"] == 30.0
