"""fly64-train: the fly64 dose/overlap study of PtychoPINN as one Hydra application."""
__version__ = "0.1.0"
