"""Reading a run back: summaries for `evo show` (plots and HTML reports later)."""
