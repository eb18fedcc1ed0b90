"""MAE: the encoder sees visible tokens only, a light decoder predicts the masked ones.

The domain supplies the tokenizer (see :mod:`maecore.tokens`); this module does the rest of the
method in the order of the paper: mask, encode visible tokens, decode all positions with mask
tokens, score the masked positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from maecore import masking as M
from maecore.losses import get_loss, normalize_targets
from maecore.models.pretrained import PretrainedMixin
from maecore.models.transformer import Transformer, init_weights
from maecore.patching import sincos_embed
from maecore.tokens import Tokens, gather_tokens

MASK_KINDS = ("random", "block", "tube", "group_budget", "group_drop", "noise", "loss_guided")
# the strategy parameters each kind accepts besides "kind" and "ratio" (see maecore.masking)
MASK_PARAMS = {
    "random": (), "block": ("block",), "tube": (), "group_budget": ("alpha",), "group_drop": ("drop_prob",),
    "noise": ("color", "sigma"), "loss_guided": ("hard_fraction",),
}


@dataclass
class MAEOutput:
    """``loss`` scalar; ``pred, target [B, L, P]``; ``mask, pad [B, L]`` (True = hidden / absent).

    ``latent [B, K, D]``: the encoder's output in this forward; ``latent_pad [B, K]``: True where a
    ``latent`` slot holds no visible, real token (filler, or a hidden token's encoding). With both,
    the engine's ``train/emb_std`` pools ``latent`` instead of running ``encode`` again.
    """

    loss: Tensor
    pred: Tensor
    target: Tensor
    mask: Tensor
    pad: Tensor
    latent: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    latent_pad: Tensor | None = None


class PosEmbed(nn.Module):
    """Token coordinates ``[B, L, C]`` -> codes ``[B, L, D]``: fixed sin-cos or a learned MLP."""

    def __init__(self, kind: str, coord_dim: int, dim: int) -> None:
        super().__init__()
        if kind not in ("sincos", "mlp"):
            raise ValueError(f"pos_embed must be 'sincos' or 'mlp', got {kind!r}")
        self.kind, self.dim = kind, dim
        if kind == "mlp":  # Point-MAE: coordinates -> 128 -> D
            self.mlp = nn.Sequential(nn.Linear(coord_dim, 128), nn.GELU(), nn.Linear(128, dim))

    def forward(self, coords: Tensor) -> Tensor:
        if self.kind == "mlp":
            return self.mlp(coords)
        return sincos_embed(coords, self.dim).to(coords.dtype if coords.is_floating_point() else torch.float32)


class MaskedAutoencoder(nn.Module, PretrainedMixin):
    """Generic MAE over any :class:`~maecore.tokens.Tokenizer`.

    Args:
        tokenizer: the domain tokenizer; its ``embed_dim`` must equal ``embed_dim``.
        embed_dim, depth, num_heads, mlp_ratio: encoder ViT.
        decoder_dim, decoder_depth, decoder_heads: the light decoder.
        mask: ``{"kind": one of MASK_KINDS, "ratio": float, ...strategy parameters}``.
        loss: a name from :data:`maecore.losses.LOSSES`; ``loss_kwargs`` go to it.
        norm_pix: per-token normalised targets (MAE).
        pos_embed: ``"sincos"`` (grid / time coordinates) or ``"mlp"`` (point coordinates).
        grad_checkpointing: recompute the encoder's and the decoder's blocks in the backward pass: less
            activation memory for about a third more compute. Both, because with 75 % masking the
            decoder (all tokens) holds more activations than the encoder (the visible quarter).
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        mask: dict[str, Any] | None = None,
        loss: str = "mse",
        loss_kwargs: dict[str, Any] | None = None,
        norm_pix: bool = False,
        pos_embed: str = "sincos",
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.mask_cfg = self._check_mask(dict(mask or {"kind": "random", "ratio": 0.75}))
        self.loss_fn = get_loss(loss)
        self.loss_kwargs = dict(loss_kwargs or {})
        self.norm_pix = norm_pix
        g, p = tokenizer.n_groups, tokenizer.target_dim
        self.embed_dim = embed_dim
        # encoder
        self.pos_embed = PosEmbed(pos_embed, tokenizer.coord_dim, embed_dim)
        self.encoder = Transformer(embed_dim, depth, num_heads, mlp_ratio, grad_checkpointing)
        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = PosEmbed(pos_embed, tokenizer.coord_dim, decoder_dim)
        self.decoder_group = nn.Embedding(g, decoder_dim)
        self.decoder = Transformer(decoder_dim, decoder_depth, decoder_heads, mlp_ratio, grad_checkpointing)
        self.heads = nn.ModuleList(nn.Linear(decoder_dim, p) for _ in range(g))
        # HPM-style difficulty predictor on the embedded tokens (only for loss-guided masking)
        self.difficulty = nn.Linear(embed_dim, 1) if self.mask_cfg["kind"] == "loss_guided" else None
        self.meta: dict[str, Any] = {}
        self._init()

    @staticmethod
    def _check_mask(cfg: dict[str, Any]) -> dict[str, Any]:
        kind = cfg.get("kind", "random")
        if kind not in MASK_KINDS:
            raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
        ratio = float(cfg.get("ratio", 0.75))
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        unknown = sorted(set(cfg) - {"kind", "ratio", *MASK_PARAMS[kind]})
        if unknown:
            allowed = ", ".join(["kind", "ratio", *MASK_PARAMS[kind]])
            raise ValueError(f"mask kind {kind!r} takes no parameter(s) {unknown}; valid keys: {allowed}")
        return {**cfg, "kind": kind, "ratio": ratio}

    def _init(self) -> None:
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.decoder_group.weight, std=0.02)

    # ------------------------------------------------------------------ masking
    def mask_tokens(self, tokens: Tokens, batch: dict[str, Any], generator: torch.Generator | None = None) -> M.Masking:
        """Apply the configured strategy: ``Tokens -> Masking`` (see :mod:`maecore.masking`)."""
        cfg = dict(self.mask_cfg)
        kind, ratio = cfg.pop("kind"), cfg.pop("ratio")
        pad = tokens.pad
        if kind == "random":
            return M.random_masking(pad, ratio, generator)
        if kind in ("group_budget", "group_drop"):
            fn = M.group_budget_masking if kind == "group_budget" else M.group_drop_masking
            return fn(pad, tokens.group, self.tokenizer.n_groups, ratio, generator=generator, **cfg)
        if kind == "loss_guided":
            with torch.no_grad():
                difficulty = self.difficulty(tokens.x).squeeze(-1)
            return M.loss_guided_masking(pad, difficulty, ratio, generator=generator, **cfg)
        grid = self.tokenizer.grid(batch)
        fn = {"block": M.block_masking, "tube": M.tube_masking, "noise": M.noise_masking}[kind]
        return fn(pad, grid, ratio, generator=generator, **cfg)

    # ------------------------------------------------------------------ encoder
    def forward_encoder(self, tokens: Tokens, masking: M.Masking) -> Tensor:
        """Visible tokens only: ``x [B, L, D] -> latent [B, K, D]`` (K = most visible in batch)."""
        x = tokens.x + self.pos_embed(tokens.pos)
        x = gather_tokens(x, masking.ids_keep)
        return self.encoder(x, masking.keep_pad)

    # ------------------------------------------------------------------ decoder
    def forward_decoder(self, latent: Tensor, tokens: Tokens, masking: M.Masking) -> Tensor:
        """``latent [B, K, D] -> pred [B, L, P]``: visible tokens back in place, mask tokens elsewhere.

        Padding (absent groups, unmeasured patches) is left out of the decoder: the real tokens are
        packed to the front first (their keys never see padding, so their outputs are the same),
        and ``pred`` is 0 at padded positions. A 2-lead ECG in a 12-lead layout, an MRI case
        without some modalities or an RGB chip in an RGB+NIR model no longer pays for the absent
        groups (counted FLOPs of the FireRisk ViT-B/16 on RGB were 1.64x those of its real tokens).
        """
        b, l = tokens.pad.shape
        y = self.decoder_embed(latent)
        # filler slots carry the mask token, so scattering them onto hidden positions is harmless
        y = torch.where(masking.keep_pad[..., None], self.mask_token.to(y.dtype), y)
        full = self.mask_token.to(y.dtype).expand(b, l, -1).clone()
        full = full.scatter(1, masking.ids_keep[..., None].expand_as(y), y)
        full = full + self.decoder_pos(tokens.pos).to(full.dtype) + self.decoder_group(tokens.group)
        group, pad, ids = tokens.group, tokens.pad, None
        if bool(pad.any()):
            n_real = (~pad).sum(1)
            width = max(int(n_real.max()), 1)
            ids = torch.argsort(pad.to(torch.uint8), dim=1, stable=True)[:, :width]  # real tokens first, in order
            full, group = gather_tokens(full, ids), group.gather(1, ids)
            pad = torch.arange(width, device=pad.device)[None] >= n_real[:, None]
        full = self.decoder(full, pad)
        out = full.new_zeros(*pad.shape, self.tokenizer.target_dim)
        for g, head in enumerate(self.heads):
            sel = (group == g) & ~pad
            if bool(sel.any()):
                out[sel] = head(full[sel]).to(out.dtype)
        if not bool((~pad).any()):  # nothing real: keep the graph (loss 0), so backward and DDP still run
            out = out + 0.0 * full.sum()
        if ids is None:
            return out
        return out.new_zeros(b, l, out.shape[-1]).scatter(1, ids[..., None].expand_as(out), out)

    # ------------------------------------------------------------------ loss
    def elem_valid(self, group: Tensor) -> Tensor | None:
        """``[B, L, P]`` valid target entries when groups have different widths, else None."""
        table = getattr(self.tokenizer, "target_valid", None)
        if table is None:
            return None
        t = table().to(group.device)
        if bool(t.all()):
            return None
        return t[group]

    def forward_loss(self, pred: Tensor, target: Tensor, tokens: Tokens, masking: M.Masking) -> Tensor:
        """Loss over masked, non-padded tokens only."""
        weight = (masking.mask & ~tokens.pad).to(pred.dtype)
        kwargs = dict(self.loss_kwargs)
        if self.norm_pix:
            kwargs["norm_pix"] = True
        return self.loss_fn(pred.float(), target.float(), weight, self.elem_valid(tokens.group), **kwargs)

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> MAEOutput:
        tokens = self.tokenizer.tokens(batch)
        target = self.tokenizer.targets(batch)
        masking = self.mask_tokens(tokens, batch, generator)
        latent = self.forward_encoder(tokens, masking)
        pred = self.forward_decoder(latent, tokens, masking)
        loss = self.forward_loss(pred, target, tokens, masking)
        extras: dict[str, Tensor] = {}
        if self.difficulty is not None:
            loss, extras = self._difficulty_loss(loss, pred, target, tokens, masking)
        return MAEOutput(loss, pred, target, masking.mask, tokens.pad, latent, extras, latent_pad=masking.keep_pad)

    def _difficulty_loss(self, loss: Tensor, pred: Tensor, target: Tensor, tokens: Tokens, masking: M.Masking):
        """HPM: train the predictor to rank tokens by their (detached) reconstruction error."""
        valid = self.elem_valid(tokens.group)
        if self.norm_pix:  # the error the model is trained on, not the raw one
            target = normalize_targets(target.float(), valid)
        sq = (pred.detach().float() - target.float()).pow(2)
        err = sq.mean(-1) if valid is None else (sq * valid).sum(-1) / valid.sum(-1).clamp(min=1)
        guess = self.difficulty(tokens.x.detach()).squeeze(-1).float()
        scored = masking.mask & ~tokens.pad
        if not bool(scored.any()):
            return loss + 0 * guess.sum(), {"difficulty_loss": guess.new_zeros(())}
        # standardise both per sample so only the ranking matters
        def z(v: Tensor) -> Tensor:
            w = scored.float()
            mean = (v * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1)
            var = ((v - mean) ** 2 * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1)
            return (v - mean) / (var + 1e-6).sqrt()
        d_loss = ((z(guess) - z(err)) ** 2)[scored].mean()
        return loss + 0.1 * d_loss, {"difficulty_loss": d_loss.detach()}

    # ------------------------------------------------------------------ embeddings
    def _group_ids(self, groups: list[str] | list[int] | None) -> list[int] | None:
        if groups is None:
            return None
        names = list(self.tokenizer.group_names)
        if len(groups) == 0:
            raise ValueError(f"groups must name at least one of this model's groups {names} (or be None for all)")
        ids = []
        for g in groups:
            if isinstance(g, int) and not isinstance(g, bool):
                if not 0 <= g < len(names):
                    raise ValueError(f"group id {g} out of range 0..{len(names) - 1}")
                ids.append(g)
            elif g in names:
                ids.append(names.index(g))
            else:
                raise ValueError(f"unknown group {g!r}; this model's groups are {names}")
        return ids

    def encode_tokens(
        self, batch: dict[str, Any], groups: list[str] | list[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """All real tokens of the chosen groups, unmasked: ``-> (emb [B, L, D], pad [B, L])``."""
        tokens = self.tokenizer.tokens(batch).keep_groups(self._group_ids(groups))
        masking = M.finalize(torch.zeros_like(tokens.pad), tokens.pad)
        latent = self.forward_encoder(tokens, masking)
        emb = latent.new_zeros(*tokens.pad.shape, latent.shape[-1])
        latent = latent.masked_fill(masking.keep_pad[..., None], 0)
        emb = emb.scatter(1, masking.ids_keep[..., None].expand_as(latent), latent)
        return emb, tokens.pad

    def encode(self, batch: dict[str, Any], groups: list[str] | list[int] | None = None) -> Tensor:
        """One vector per sample: the mean of its real tokens' encodings ``[B, D]``."""
        emb, pad = self.encode_tokens(batch, groups)
        w = (~pad).to(emb.dtype)[..., None]
        return (emb * w).sum(1) / w.sum(1).clamp(min=1)
