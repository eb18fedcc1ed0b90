"""Registered skelmae models: a SkeletonMAE-style graph MAE and a MAMP-style token transformer.

SkeletonMAE (Yan et al. 2023): joints of the human graph are masked (here: whole body parts per
time segment) and replaced by a mask token; a graph encoder (GIN over each frame's bones,
alternating with attention along time per joint) encodes every token; a light graph decoder
reconstructs the masked joints' positions. MAMP (Mao et al. 2023): joint x 4-frame tokens, 90 %
masking biased towards moving joints, the encoder sees visible tokens only (the core's MAE), the
targets are positions and motion (frame differences).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from maecore.losses import masked_mse
from maecore.models.mae import MAEOutput, MaskedAutoencoder
from maecore.models.pretrained import PretrainedMixin
from maecore.models.registry import register_model
from maecore.models.sizes import vit_size
from maecore.models.transformer import Block, init_weights, key_padding_mask
from maecore.patching import sincos_embed
from skelmae.tokenizers import MASK_KINDS, JointSegmentTokenizer, mask_skeleton
from skelmae.topology import Topology, get_topology

CONVS = ("gin", "gcn")


def resolve_topology(topology: str | dict[str, Any]) -> Topology:
    return Topology.from_dict(topology) if isinstance(topology, dict) else get_topology(topology)


def make_tokenizer(
    topology: str | dict[str, Any], channels: int, t_patch: int, embed_dim: int, target: str
) -> JointSegmentTokenizer:
    topo = resolve_topology(topology)
    return JointSegmentTokenizer(
        topo.n_joints, channels, t_patch, embed_dim, topo.part_ids().tolist(), topo.part_names, target
    )


def check_mask(cfg: dict[str, Any]) -> dict[str, Any]:
    """``{"kind": one of MASK_KINDS, "ratio": [0, 1), "tau": > 0 (motion only)}``."""
    kind = cfg.get("kind", "random")
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
    ratio = float(cfg.get("ratio", 0.75))
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    unknown = sorted(set(cfg) - {"kind", "ratio", *(("tau",) if kind == "motion" else ())})
    if unknown:
        raise ValueError(f"mask kind {kind!r} takes no parameter(s) {unknown}")
    return {**cfg, "kind": kind, "ratio": ratio}


# ---------------------------------------------------------------------------- MAMP: core MAE
class SkeletonTokenMAE(MaskedAutoencoder):
    """The core MAE over joint x segment tokens with the skeleton masking strategies."""

    _check_mask = staticmethod(check_mask)

    def mask_tokens(self, tokens, batch, generator=None):  # noqa: ANN001 (the core's signature)
        cfg = dict(self.mask_cfg)
        return mask_skeleton(cfg.pop("kind"), cfg.pop("ratio"), self.tokenizer, tokens, batch, generator, **cfg)


# ---------------------------------------------------------------------------- SkeletonMAE: graph
class GraphTemporalBlock(nn.Module):
    """Spatial graph convolution over each frame's bones, then attention + MLP along time per joint:
    ``h [B, S, V, D] -> [B, S, V, D]`` (pre-norm residuals)."""

    def __init__(self, dim: int, num_heads: int, conv: str = "gin", mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if conv not in CONVS:
            raise ValueError(f"conv must be one of {CONVS}, got {conv!r}")
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # torch_geometric (about 2 s: it imports transformers for its LLM tools) loads when a graph
        # model is built, not whenever the model registry is listed
        from torch_geometric.nn import GCNConv, GINConv

        if conv == "gin":
            self.conv = GINConv(nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)), train_eps=True)
        else:
            self.conv = GCNConv(dim, dim)
        self.temporal = Block(dim, num_heads, mlp_ratio)

    def forward(self, h: Tensor, edge_index: Tensor, pad: Tensor) -> Tensor:
        b, s, v, d = h.shape
        h = h + self.conv(self.norm(h).reshape(-1, d), edge_index).reshape(b, s, v, d)
        t = h.transpose(1, 2).reshape(b * v, s, d)
        t = self.temporal(t, key_padding_mask(pad.transpose(1, 2).reshape(b * v, s)))
        return t.reshape(b, v, s, d).transpose(1, 2)


class GraphEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, conv: str) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.blocks = nn.ModuleList(GraphTemporalBlock(dim, num_heads, conv) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, h: Tensor, edge_index: Tensor, pad: Tensor) -> Tensor:
        for blk in self.blocks:
            h = blk(h, edge_index, pad)
        return self.norm(h)


class GraphSkeletonMAE(nn.Module, PretrainedMixin):
    """SkeletonMAE-style: hidden tokens enter the graph encoder as a mask token; padding tokens are
    cut out of the graph (no edge touches them) and out of the temporal attention."""

    def __init__(
        self,
        tokenizer: JointSegmentTokenizer,
        edge_index: Tensor,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        conv: str = "gin",
        mask: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer, self.embed_dim = tokenizer, embed_dim
        self.mask_cfg = check_mask(dict(mask or {"kind": "body_part", "ratio": 0.5}))
        self.register_buffer("edges", edge_index, persistent=False)
        self.mask_token = nn.Parameter(torch.zeros(embed_dim))
        self.encoder = GraphEncoder(embed_dim, depth, num_heads, conv)
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.decoder_mask_token = nn.Parameter(torch.zeros(decoder_dim))
        self.decoder_blocks = GraphEncoder(decoder_dim, decoder_depth, decoder_heads, conv)
        self.decoder_pred = nn.Linear(decoder_dim, tokenizer.target_dim)
        self.meta: dict[str, Any] = {}
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.decoder_mask_token, std=0.02)

    def graph(self, pad: Tensor, grid: tuple[int, int]) -> Tensor:
        """Bones of every (sample, segment) graph, batched, without edges touching padding: ``[2, E']``."""
        b, (s, v) = pad.shape[0], grid
        offsets = torch.arange(b * s, device=pad.device) * v
        ei = (self.edges[:, None, :] + offsets[None, :, None]).reshape(2, -1)
        flat = pad.reshape(-1)
        return ei[:, ~(flat[ei[0]] | flat[ei[1]])]

    def _time_code(self, tokens, dim: int) -> Tensor:  # noqa: ANN001
        return sincos_embed(tokens.pos[..., :1], dim).to(tokens.x.dtype)

    def _run(self, x: Tensor, tokens, batch: dict[str, Any], encoder: GraphEncoder) -> Tensor:  # noqa: ANN001
        grid = self.tokenizer.grid(batch)
        b, (s, v) = x.shape[0], grid
        x = x.masked_fill(tokens.pad[..., None], 0.0)
        h = encoder(x.reshape(b, s, v, -1), self.graph(tokens.pad, grid), tokens.pad.reshape(b, s, v))
        return h.reshape(b, s * v, -1)

    def forward_encoder(self, tokens, batch: dict[str, Any], hide: Tensor) -> Tensor:  # noqa: ANN001
        """``tokens.x [B, L, D]`` with hidden tokens replaced by the mask token ``-> latent [B, L, D]``."""
        x = torch.where(hide[..., None], self.mask_token.to(tokens.x.dtype), tokens.x)
        return self._run(x + self._time_code(tokens, self.embed_dim), tokens, batch, self.encoder)

    def forward_decoder(self, latent: Tensor, tokens, batch: dict[str, Any], hide: Tensor) -> Tensor:  # noqa: ANN001
        """Re-mask (GraphMAE) and decode: ``latent [B, L, D] -> pred [B, L, P]``."""
        y = self.decoder_embed(latent)
        y = torch.where(hide[..., None], self.decoder_mask_token.to(y.dtype), y)
        y = self._run(y + self._time_code(tokens, y.shape[-1]), tokens, batch, self.decoder_blocks)
        return self.decoder_pred(y)

    def mask_tokens(self, tokens, batch: dict[str, Any], generator: torch.Generator | None = None):  # noqa: ANN001
        cfg = dict(self.mask_cfg)
        return mask_skeleton(cfg.pop("kind"), cfg.pop("ratio"), self.tokenizer, tokens, batch, generator, **cfg)

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> MAEOutput:
        tokens = self.tokenizer.tokens(batch)
        target = self.tokenizer.targets(batch)
        masking = self.mask_tokens(tokens, batch, generator)
        latent = self.forward_encoder(tokens, batch, masking.mask)
        pred = self.forward_decoder(latent, tokens, batch, masking.mask)
        loss = masked_mse(pred.float(), target.float(), (masking.mask & ~tokens.pad).float())
        # hidden joints went through the encoder as mask tokens: only the visible, real ones pool into train/emb_std
        return MAEOutput(loss, pred, target, masking.mask, tokens.pad, latent, latent_pad=masking.mask | tokens.pad)

    def encode_tokens(
        self, batch: dict[str, Any], groups: list[str] | list[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Every real token of the chosen body parts, unmasked: ``-> (emb [B, L, D], pad [B, L])``."""
        tokens = self.tokenizer.tokens(batch)
        if groups is not None:
            names = self.tokenizer.group_names
            bad = [g for g in groups if not (isinstance(g, int) and 0 <= g < len(names)) and g not in names]
            if bad or not groups:
                raise ValueError(f"unknown group(s) {bad}; this model's groups are {names}")
            tokens = tokens.keep_groups([g if isinstance(g, int) else names.index(g) for g in groups])
        latent = self.forward_encoder(tokens, batch, torch.zeros_like(tokens.pad))
        return latent.masked_fill(tokens.pad[..., None], 0.0), tokens.pad

    def encode(self, batch: dict[str, Any], groups: list[str] | list[int] | None = None) -> Tensor:
        """One vector per clip: the mean of its real tokens' encodings ``[B, D]``."""
        emb, pad = self.encode_tokens(batch, groups)
        w = (~pad).to(emb.dtype)[..., None]
        return (emb * w).sum(1) / w.sum(1).clamp(min=1)


# ---------------------------------------------------------------------------- registry
def _graph(
    topology: str | dict[str, Any],
    channels: int,
    t_patch: int,
    arch: dict[str, Any],
    conv: str,
    mask_kind: str,
    mask_ratio: float,
    target: str,
) -> GraphSkeletonMAE:
    tok = make_tokenizer(topology, channels, t_patch, arch["embed_dim"], target)
    return GraphSkeletonMAE(
        tok, resolve_topology(topology).edge_index(), **arch, conv=conv, mask={"kind": mask_kind, "ratio": mask_ratio}
    )


@register_model("skelmae_graph")
def skelmae_graph(
    topology: str | dict = "cmu31",
    channels: int = 3,
    t_patch: int = 1,
    conv: str = "gin",
    mask_kind: str = "body_part",
    mask_ratio: float = 0.5,
    target: str = "position",
) -> GraphSkeletonMAE:
    """SkeletonMAE-style graph MAE: per-frame tokens, 4 GIN + temporal-attention blocks of width 128."""
    arch = dict(embed_dim=128, depth=4, num_heads=4, decoder_dim=64, decoder_depth=1, decoder_heads=4)
    return _graph(topology, channels, t_patch, arch, conv, mask_kind, mask_ratio, target)


@register_model("skelmae_graph_tiny")
def skelmae_graph_tiny(
    topology: str | dict = "cmu31",
    channels: int = 3,
    t_patch: int = 2,
    conv: str = "gin",
    mask_kind: str = "body_part",
    mask_ratio: float = 0.5,
    target: str = "position",
) -> GraphSkeletonMAE:
    """A CPU/test size: 2-frame tokens, 2 blocks of width 32."""
    arch = dict(embed_dim=32, depth=2, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    return _graph(topology, channels, t_patch, arch, conv, mask_kind, mask_ratio, target)


def _mamp(
    topology: str | dict[str, Any],
    channels: int,
    t_patch: int,
    arch: dict[str, Any],
    mask_kind: str,
    mask_ratio: float,
    target: str,
) -> SkeletonTokenMAE:
    tok = make_tokenizer(topology, channels, t_patch, arch["embed_dim"], target)
    mask: dict[str, Any] = {"kind": mask_kind, "ratio": mask_ratio}
    return SkeletonTokenMAE(tok, **arch, mask=mask, loss="mse")


@register_model("skelmae_mamp")
def skelmae_mamp(
    topology: str | dict = "cmu31",
    channels: int = 3,
    t_patch: int = 4,
    mask_kind: str = "motion",
    mask_ratio: float = 0.9,
    target: str = "position+motion",
) -> SkeletonTokenMAE:
    """MAMP: joint x 4-frame tokens, 8 x 256 encoder, 5-block decoder, 90 % motion-aware masking."""
    arch = dict(embed_dim=256, depth=8, num_heads=8, decoder_dim=256, decoder_depth=5, decoder_heads=8)
    return _mamp(topology, channels, t_patch, arch, mask_kind, mask_ratio, target)


@register_model("skelmae_mamp_tiny")
def skelmae_mamp_tiny(
    topology: str | dict = "cmu31",
    channels: int = 3,
    t_patch: int = 4,
    mask_kind: str = "motion",
    mask_ratio: float = 0.9,
    target: str = "position+motion",
) -> SkeletonTokenMAE:
    """A CPU/test size of MAMP: the core's tiny ViT."""
    return _mamp(topology, channels, t_patch, vit_size("tiny"), mask_kind, mask_ratio, target)
