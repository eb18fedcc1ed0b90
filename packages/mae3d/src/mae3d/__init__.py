"""mae3d: masked autoencoders for point clouds (Point-MAE) and radiance grids (NeRF-MAE)."""

__version__ = "0.1.0"
