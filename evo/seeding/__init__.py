"""Seeding a search: programs from outside a run, read with their provenance, before they meet the pipeline.

A SOURCE is one string (`evo run --seed-from SOURCE`, `evo seed RUN_DIR --from SOURCE`):

    path/to/file.py              one program
    path/to/folder[:GLOB]        every file matching GLOB (default *.py) in a folder
    path/to/repo@REV[:GLOB]      a git repository at a commit, tag or branch (REV), files chosen by GLOB
    path/to/repo[:GLOB]          a git repository (a folder with .git) at its HEAD
    export.jsonl | export.parquet  the valid programs of an `evo export`
    runs/x                       another run directory: its elites (the archive rebuilt from its store)
    archive/<family>-<device>.jsonl  a published archive (`evo publish`): the rows of this run's task

Reading a source never evaluates anything: each `Seed` is a candidate program and where it came from
(`provenance`: source, kind, commit, path, licence when known). The run directory (evo/run_dir.py) screens
them (parse, near-duplicates against the run's novelty index) and stores them as proposed programs; the
engine evaluates them through the pipeline like any other candidate.
"""

from evo.seeding.screen import ScreenedSeeds, screen_seeds
from evo.seeding.sources import Seed, SourceSpec, parse_source, read_source, read_sources

__all__ = ["ScreenedSeeds", "Seed", "SourceSpec", "parse_source", "read_source", "read_sources", "screen_seeds"]
