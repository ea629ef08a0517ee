"""`medmamba demo`: the whole toolkit end to end on generated data (see pipeline.py and default.yaml)."""
from medmamba.demo.pipeline import DEFAULT_CONFIG, Demo, load_config

__all__ = ["DEFAULT_CONFIG", "Demo", "load_config"]
