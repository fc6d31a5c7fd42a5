"""fedrank: a reproducible benchmark suite for federated learning on medical images."""

__version__ = "0.1.0"
