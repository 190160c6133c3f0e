"""evo: open-ended evolutionary search for automated AI research."""

__version__ = "0.1.0"
