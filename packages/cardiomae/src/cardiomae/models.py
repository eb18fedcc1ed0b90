"""Registered cardiomae models: per-lead patch tokens, lead (channel-type) and time embeddings, MAE.

CSFM (Gu et al. 2025) feeds 10 s at 250 Hz of up to 12 ECG leads and PPG as 25-sample patches,
each token carrying a channel-type embedding of its lead; its Tiny size is a 768-wide, 6-block,
8-head ViT with an MLP of 1024. Here each lead slot is one group of the core's
:class:`~maecore.tokenizers.PatchTokenizer` (a projection and a learned lead embedding per slot;
slots absent from a whole batch are left out of the sequence, see :mod:`cardiomae.tokenizers`),
time is the fixed sin-cos code of the patch index, and masking hides random patches within the
leads plus whole leads (the core's ``group_drop``), so one model takes any subset of leads and
learns to synthesise the missing ones (ST-MEM, CSFM cross-lead generation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cardiomae.leads import CANONICAL_LEADS
from cardiomae.tokenizers import LeadPatchTokenizer
from maecore import masking as M
from maecore.models.mae import MAEOutput, MaskedAutoencoder
from maecore.models.registry import register_model
from maecore.tokens import Tokens


class CardioMAE(MaskedAutoencoder):
    """The core MAE plus a same-time linear lead mix added to the decoder's prediction.

    Body-surface leads are, to first order, linear projections of one cardiac dipole, so a hidden
    lead at time t is largely a weighted sum of the visible leads at the same t. ``lead_mix [G, G]``
    (zero at start, diagonal unused) adds ``sum_h W[g, h] * visible patch of lead h at t`` to the
    prediction of lead ``g`` at ``t``; the transformer learns the rest (timing, morphology, which
    leads are present). Without it the decoder first has to discover same-time attention, which
    takes thousands of steps. ``lead_mix=False`` gives the plain core MAE. The weights are stored
    divided by :attr:`MIX_SCALE` so that Adam's per-step change (about the learning rate) moves a
    mixing weight by about ``MIX_SCALE * lr``: a few dozen steps instead of a thousand.
    """

    MIX_SCALE = 20.0

    def __init__(self, tokenizer: nn.Module, *, lead_mix: bool = True, **kwargs: Any) -> None:
        super().__init__(tokenizer, **kwargs)
        g = tokenizer.n_groups
        self.lead_mix = nn.Parameter(torch.zeros(g, g)) if lead_mix else None

    def mix(self, tokens: Tokens, target: Tensor, visible: Tensor) -> Tensor:
        """``target [B, L, P]`` (lead-major), ``visible [B, L]`` -> same-time mix ``[B, L, P]``."""
        if self.lead_mix is None:
            return torch.zeros_like(target)
        b, l, p = target.shape
        slots = tokens.group[0]
        n = int((slots == slots[0]).sum())
        kept = slots.reshape(-1, n)[:, 0]
        w = self.MIX_SCALE * self.lead_mix[kept][:, kept] * (1 - torch.eye(len(kept), device=target.device))
        x = (target * visible[..., None].to(target.dtype)).reshape(b, len(kept), n, p)
        return torch.einsum("gh,bhnp->bgnp", w.to(x.dtype), x).reshape(b, l, p)

    def predict(self, tokens: Tokens, target: Tensor, masking: M.Masking) -> Tensor:
        """Encoder on visible tokens, decoder on all positions, plus the lead mix: ``[B, L, P]``."""
        latent = self.forward_encoder(tokens, masking)
        pred = self.forward_decoder(latent, tokens, masking)
        return pred + self.mix(tokens, target, masking.visible).to(pred.dtype)

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> MAEOutput:
        tokens = self.tokenizer.tokens(batch)
        target = self.tokenizer.targets(batch)
        masking = self.mask_tokens(tokens, batch, generator)
        pred = self.predict(tokens, target, masking)
        loss = self.forward_loss(pred, target, tokens, masking)
        return MAEOutput(loss, pred, target, masking.mask, tokens.pad, None)


#: encoder / decoder sizes (the decoder of CSFM-Tiny is ours: CSFM publishes its encoder only)
SIZES = {
    "tiny": dict(embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, decoder_dim=64, decoder_depth=2, decoder_heads=4),
    "csfm_tiny": dict(embed_dim=768, depth=6, num_heads=8, mlp_ratio=1024 / 768, decoder_dim=256, decoder_depth=4,
                      decoder_heads=8),
}


def build_cardiomae(size: str, leads: Sequence[str] | None, patch_size: int, mask_ratio: float, lead_drop: float,
                    norm_pix: bool, grad_checkpointing: bool, lead_mix: bool = True) -> CardioMAE:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    names = list(leads) if leads else list(CANONICAL_LEADS)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"leads must be distinct lead names, got {names}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    arch = dict(SIZES[size])
    tok = LeadPatchTokenizer(names, patch_size, arch["embed_dim"])
    mask = {"kind": "group_drop", "ratio": float(mask_ratio), "drop_prob": float(lead_drop)}
    return CardioMAE(tok, **arch, mask=mask, loss="mse", norm_pix=norm_pix, grad_checkpointing=grad_checkpointing,
                     lead_mix=lead_mix)


@register_model("cardiomae_tiny")
def cardiomae_tiny(leads: list[str] | None = None, patch_size: int = 25, mask_ratio: float = 0.5,
                   lead_drop: float = 0.5, norm_pix: bool = False, grad_checkpointing: bool = False,
                   lead_mix: bool = True) -> CardioMAE:
    """A CPU/test size (64 wide, 4 blocks; about 0.35 M parameters with 13 lead slots)."""
    return build_cardiomae("tiny", leads, patch_size, mask_ratio, lead_drop, norm_pix, grad_checkpointing, lead_mix)


@register_model("cardiomae_csfm_tiny")
def cardiomae_csfm_tiny(leads: list[str] | None = None, patch_size: int = 25, mask_ratio: float = 0.5,
                        lead_drop: float = 0.5, norm_pix: bool = False, grad_checkpointing: bool = False,
                        lead_mix: bool = True) -> CardioMAE:
    """CSFM-Tiny encoder size: 768 wide, 6 blocks, 8 heads, MLP 1024; a 4-block 256-wide decoder."""
    return build_cardiomae("csfm_tiny", leads, patch_size, mask_ratio, lead_drop, norm_pix, grad_checkpointing,
                           lead_mix)
