"""The live web view of runs (`evo ui`): a read-only Starlette app over `evo.load` (see app.py)."""
