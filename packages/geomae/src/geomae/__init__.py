"""geomae: masked autoencoders for multispectral rasters (SatVision-TOA SimMIM, FireRisk MAE)."""

__version__ = "0.1.0"
