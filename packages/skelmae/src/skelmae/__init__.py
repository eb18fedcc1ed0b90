"""skelmae: masked autoencoders for skeleton motion on joint graphs (SkeletonMAE, MAMP)."""

__version__ = "0.1.0"
