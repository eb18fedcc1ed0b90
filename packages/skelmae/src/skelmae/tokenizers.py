"""Joint x time-segment tokens (MAMP) and the skeleton masking strategies.

Batch keys: ``"x" [B, T, V, C]`` normalised joint coordinates, ``"valid" [B, T, V]`` measured joints.
A token is one joint over ``t_patch`` consecutive frames; tokens are ordered segment-major,
``L = S * V`` with ``S = T / t_patch`` and token ``s * V + v``. A token with any unmeasured frame is
padding. ``pos`` is ``(segment, joint)``; ``group`` the joint's body part.

Masking strategies (pure functions returning :class:`maecore.masking.Masking`, padding-aware,
seeded by a ``torch.Generator``): ``random`` (tokens), ``joint`` (the same joints over the whole
clip: a tube along time), ``frame`` (every joint of whole segments), ``body_part`` (whole body
parts in a segment) and ``motion`` (MAMP: tokens that move more are hidden more often).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from maecore import masking as M
from maecore.tokens import Tokens

TARGETS = ("position", "position+motion")
MASK_KINDS = ("random", "joint", "frame", "body_part", "motion")


class JointSegmentTokenizer(nn.Module):
    """``x [B, T, V, C] -> Tokens [B, S * V, D]``: a linear embedding of each joint's ``t_patch``
    frames plus a learned per-joint embedding.

    Args:
        n_joints, channels: V and C of the input.
        t_patch: frames per token.
        embed_dim: token width D.
        part_ids: body part of each joint (``[V]``), part_names: their names (the token groups).
        target: ``position`` (the token's coordinates) or ``position+motion`` (also the frame
            differences, MAMP's motion target).
    """

    coord_dim = 2

    def __init__(
        self,
        n_joints: int,
        channels: int,
        t_patch: int,
        embed_dim: int,
        part_ids: Sequence[int],
        part_names: Sequence[str],
        target: str = "position",
    ) -> None:
        super().__init__()
        if n_joints < 1 or channels < 1 or t_patch < 1:
            raise ValueError(f"n_joints, channels and t_patch must be >= 1, got {n_joints}, {channels}, {t_patch}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if len(part_ids) != n_joints or max(part_ids) >= len(part_names):
            raise ValueError(f"part_ids must give one of {len(part_names)} parts for each of {n_joints} joints")
        self.n_joints, self.channels, self.t_patch, self.embed_dim, self.target = (
            n_joints,
            channels,
            t_patch,
            embed_dim,
            target,
        )
        self.group_names = list(part_names)
        self.n_groups = len(self.group_names)
        self.register_buffer("part_ids", torch.as_tensor(list(part_ids), dtype=torch.long), persistent=False)
        self.patch_dim = t_patch * channels
        self.target_dim = self.patch_dim * (2 if target == "position+motion" else 1)
        self.proj = nn.Linear(self.patch_dim, embed_dim)
        self.joint_embed = nn.Parameter(torch.zeros(n_joints, embed_dim))
        nn.init.normal_(self.joint_embed, std=0.02)

    def _check(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        x = batch["x"]
        if x.dim() != 4 or x.shape[2] != self.n_joints or x.shape[3] != self.channels:
            raise ValueError(
                f"x must be [B, T, {self.n_joints}, {self.channels}] (V joints, C channels), got {list(x.shape)}"
            )
        if x.shape[1] % self.t_patch:
            raise ValueError(f"clip length {x.shape[1]} must be a multiple of t_patch {self.t_patch}")
        valid = batch.get("valid")
        valid = torch.ones(x.shape[:3], dtype=torch.bool, device=x.device) if valid is None else valid.bool()
        if valid.shape != x.shape[:3]:
            raise ValueError(f"valid must be [B, T, V] = {list(x.shape[:3])}, got {list(valid.shape)}")
        valid = valid & torch.isfinite(x).all(-1)
        return torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device)), valid

    def grid(self, batch: dict[str, Any]) -> tuple[int, int]:
        return batch["x"].shape[1] // self.t_patch, self.n_joints

    def _segments(self, v: Tensor) -> Tensor:
        """``[B, T, V, *] -> [B, S * V, t_patch, *]``."""
        b, t, n = v.shape[:3]
        s = t // self.t_patch
        v = v.reshape(b, s, self.t_patch, n, *v.shape[3:]).transpose(2, 3)
        return v.reshape(b, s * n, self.t_patch, *v.shape[4:])

    def pad(self, batch: dict[str, Any]) -> Tensor:
        _, valid = self._check(batch)
        return ~self._segments(valid).all(-1)

    def tokens(self, batch: dict[str, Any]) -> Tokens:
        x, valid = self._check(batch)
        b = x.shape[0]
        s, v = self.grid(batch)
        seg = self._segments(x).flatten(2)  # [B, L, t_patch * C]
        joints = torch.arange(v, device=x.device).repeat(s)
        emb = self.proj(seg) + self.joint_embed[joints]
        pos = torch.stack(torch.meshgrid(torch.arange(s), torch.arange(v), indexing="ij"), -1).reshape(-1, 2)
        return Tokens(
            x=emb,
            pos=pos.to(x.device).float().expand(b, -1, -1),
            group=self.part_ids[joints].expand(b, -1),
            pad=~self._segments(valid).all(-1),
        )

    def motion(self, batch: dict[str, Any]) -> Tensor:
        """Frame differences ``[B, T, V, C]`` (0 at the first frame and next to missing frames)."""
        x, valid = self._check(batch)
        d = torch.zeros_like(x)
        d[:, 1:] = x[:, 1:] - x[:, :-1]
        ok = torch.zeros_like(valid)
        ok[:, 1:] = valid[:, 1:] & valid[:, :-1]
        return d * ok[..., None]

    def targets(self, batch: dict[str, Any]) -> Tensor:
        x, _ = self._check(batch)
        out = self._segments(x).flatten(2)
        if self.target == "position+motion":
            out = torch.cat([out, self._segments(self.motion(batch)).flatten(2)], -1)
        return out

    def motion_score(self, batch: dict[str, Any]) -> Tensor:
        """``[B, L]``: mean speed of each token's joint over its frames (MAMP's motion intensity)."""
        return self._segments(self.motion(batch).norm(dim=-1)).mean(-1)

    def untokenize(self, pred: Tensor, batch: dict[str, Any]) -> Tensor:
        """``[B, L, P] -> positions [B, T, V, C]``: the inverse of the position part of the target."""
        b = pred.shape[0]
        s, v = self.grid(batch)
        p = pred[..., : self.patch_dim].reshape(b, s, v, self.t_patch, self.channels).transpose(2, 3)
        return p.reshape(b, s * self.t_patch, v, self.channels)

    def token_to_frames(self, tok: Tensor, batch: dict[str, Any]) -> Tensor:
        """A per-token ``[B, L]`` value spread over its frames: ``[B, T, V]``."""
        b = tok.shape[0]
        s, v = self.grid(batch)
        return tok.reshape(b, s, 1, v).expand(b, s, self.t_patch, v).reshape(b, s * self.t_patch, v)


# ---------------------------------------------------------------------------- masking
def _n_mask(pad: Tensor, ratio: float) -> Tensor:
    return torch.round((~pad).sum(1).float() * ratio).long()


def frame_masking(
    pad: Tensor, grid: Sequence[int], ratio: float, generator: torch.Generator | None = None
) -> M.Masking:
    """Hide every joint of ``round(S * ratio)`` random segments: ``pad [B, S * V] -> Masking``."""
    M._check_ratio(ratio)
    s, v = grid
    noise = torch.rand(pad.shape[0], s, generator=generator, device=pad.device)
    rank = noise.argsort(1).argsort(1)
    hide = rank < round(s * ratio)
    return M.finalize(hide[:, :, None].expand(-1, s, v).reshape(pad.shape), pad)


def body_part_masking(
    pad: Tensor, grid: Sequence[int], part_ids: Tensor, ratio: float, generator: torch.Generator | None = None
) -> M.Masking:
    """Hide whole (segment, body part) units in random order until ``ratio`` of the tokens are hidden."""
    M._check_ratio(ratio)
    s, v = grid
    b, n_parts = pad.shape[0], int(part_ids.max()) + 1
    sizes = torch.bincount(part_ids, minlength=n_parts).float().repeat(s)  # [S * P]
    order = torch.rand(b, s * n_parts, generator=generator, device=pad.device).argsort(1)
    cum = sizes[order].cumsum(1)
    hide_sorted = cum <= ratio * s * v + 1e-6
    hide_units = torch.zeros_like(hide_sorted).scatter(1, order, hide_sorted)  # [B, S * P]
    unit_of_token = (torch.arange(s, device=pad.device)[:, None] * n_parts + part_ids[None]).reshape(-1)
    return M.finalize(hide_units[:, unit_of_token], pad)


def motion_aware_masking(
    pad: Tensor, motion: Tensor, ratio: float, tau: float = 0.75, generator: torch.Generator | None = None
) -> M.Masking:
    """MAMP: draw ``round(n_real * ratio)`` tokens to hide without replacement, with probability
    ``softmax(m / tau)`` of the per-sample normalised motion ``m`` (Gumbel top-k)."""
    M._check_ratio(ratio)
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    real = (~pad).float()
    m = motion * real
    m = m / (m.sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1)).clamp(min=1e-8)
    u = torch.rand(pad.shape, generator=generator, device=pad.device).clamp(1e-9, 1 - 1e-9)
    score = (m / tau - torch.log(-torch.log(u))).masked_fill(pad, float("-inf"))
    rank = score.argsort(1, descending=True).argsort(1)
    return M.finalize(rank < _n_mask(pad, ratio)[:, None], pad)


def mask_skeleton(
    kind: str,
    ratio: float,
    tokenizer: JointSegmentTokenizer,
    tokens: Tokens,
    batch: dict[str, Any],
    generator: torch.Generator | None = None,
    tau: float = 0.75,
) -> M.Masking:
    """Dispatch one of :data:`MASK_KINDS` on a batch's tokens."""
    pad, grid = tokens.pad, tokenizer.grid(batch)
    if kind == "random":
        return M.random_masking(pad, ratio, generator)
    if kind == "joint":
        return M.tube_masking(pad, grid, ratio, generator=generator)
    if kind == "frame":
        return frame_masking(pad, grid, ratio, generator)
    if kind == "body_part":
        return body_part_masking(pad, grid, tokenizer.part_ids, ratio, generator)
    if kind == "motion":
        return motion_aware_masking(pad, tokenizer.motion_score(batch), ratio, tau, generator)
    raise ValueError(f"mask kind must be one of {MASK_KINDS}, got {kind!r}")
