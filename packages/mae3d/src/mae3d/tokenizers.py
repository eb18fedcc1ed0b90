"""Point-MAE tokens: farthest-point-sampled centres, kNN neighbourhoods, a mini-PointNet per patch.

Batch keys: ``"points" [B, N, 3]`` (normalised clouds). Each token is one local patch: its
``group_size`` nearest points around an FPS centre, expressed relative to the centre; ``pos`` is
the centre (the model embeds it with an MLP), and the target is the patch's relative coordinates,
scored with a Chamfer distance, so point order inside a patch does not matter.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from maecore.pointops import farthest_point_sample, gather_points, knn
from maecore.tokens import Tokens


class MiniPointNet(nn.Module):
    """Shared point MLP, max-pool, concat the pooled feature back, second MLP, max-pool:
    ``[M, k, 3] -> [M, D]`` (the patch embedding of Point-MAE)."""

    def __init__(self, embed_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv1d(3, hidden, 1), nn.BatchNorm1d(hidden), nn.ReLU(),
                                   nn.Conv1d(hidden, 2 * hidden, 1))
        self.second = nn.Sequential(nn.Conv1d(4 * hidden, 4 * hidden, 1), nn.BatchNorm1d(4 * hidden), nn.ReLU(),
                                    nn.Conv1d(4 * hidden, embed_dim, 1))

    def forward(self, patches: Tensor) -> Tensor:
        f = self.first(patches.transpose(1, 2))  # [M, 2h, k]
        g = f.max(-1, keepdim=True).values.expand_as(f)
        f = self.second(torch.cat([g, f], 1))  # [M, D, k]
        return f.max(-1).values


class PointPatchTokenizer(nn.Module):
    """``num_patches`` FPS centres x ``group_size`` neighbours -> tokens of width ``embed_dim``."""

    n_groups = 1
    coord_dim = 3

    def __init__(self, num_patches: int, group_size: int, embed_dim: int) -> None:
        super().__init__()
        if num_patches < 1 or group_size < 1:
            raise ValueError(f"num_patches and group_size must be >= 1, got {num_patches}, {group_size}")
        self.num_patches, self.group_size, self.embed_dim = num_patches, group_size, embed_dim
        self.group_names = ["points"]
        self.target_dim = group_size * 3
        self.encoder = MiniPointNet(embed_dim)

    @property
    def min_points(self) -> int:
        return max(self.num_patches, self.group_size)

    def group(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """``(centres [B, G, 3], patches [B, G, k, 3])`` relative to their centres, cached in batch."""
        cached = batch.get("_patches")
        if cached is not None:
            return cached
        pts = batch["points"]
        if pts.dim() != 3 or pts.shape[-1] != 3:
            raise ValueError(f"points must be [B, N, 3], got {list(pts.shape)}")
        if pts.shape[1] < self.min_points:
            raise ValueError(
                f"clouds of {pts.shape[1]} points are too small for {self.num_patches} patches of "
                f"{self.group_size} points"
            )
        with torch.no_grad():
            centre_idx = farthest_point_sample(pts, self.num_patches)
            centres = gather_points(pts, centre_idx)
            _, nbr = knn(centres, pts, self.group_size)
        patches = gather_points(pts, nbr) - centres[:, :, None]
        batch["_patches"] = (centres, patches)
        return centres, patches

    def tokens(self, batch: dict[str, Any]) -> Tokens:
        centres, patches = self.group(batch)
        b, g, k, _ = patches.shape
        x = self.encoder(patches.reshape(b * g, k, 3)).reshape(b, g, -1)
        zeros = torch.zeros(b, g, dtype=torch.long, device=x.device)
        return Tokens(x=x, pos=centres, group=zeros, pad=zeros.bool())

    def targets(self, batch: dict[str, Any]) -> Tensor:
        _, patches = self.group(batch)
        return patches.flatten(2)

    def untokenize(self, pred: Tensor, batch: dict[str, Any]) -> Tensor:
        """``pred [B, G, k * 3] -> points [B, G, k, 3]`` back in the cloud's (normalised) frame."""
        centres, _ = self.group(batch)
        return pred.reshape(*pred.shape[:2], self.group_size, 3) + centres[:, :, None]
