"""recframe: a config-driven two-tower retrieval framework."""

__version__ = "0.1.0"
