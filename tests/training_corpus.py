"""A tiny byte-level corpus for the training tests, built from the docstrings of Python's own standard library
(no download): train / val / test shards and a manifest, in the layout `evo data prepare` writes."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path

import numpy as np

from evo.data.shards import Manifest, ShardInfo, write_shard

MODULES = ("os", "json", "pathlib", "collections", "argparse", "subprocess", "threading", "functools",
           "itertools", "re", "string", "textwrap", "logging", "unittest", "email", "http.client", "csv", "random")


def _texts() -> list[str]:
    docs = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 200:
                docs.append(doc)
    return sorted(set(docs))


def build_corpus(root: Path, train_bytes: int = 300_000, val_bytes: int = 40_000) -> Path:
    """Write the corpus under `root` (documents split by a hash of their text); returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[bytes]] = {"train": [], "val": [], "test": []}
    for doc in _texts():
        h = int(hashlib.sha256(doc.encode()).hexdigest(), 16) % 10
        splits["val" if h == 0 else "test" if h == 1 else "train"].append(doc.encode() + b"\n\n")
    caps = {"train": train_bytes, "val": val_bytes, "test": val_bytes}
    manifest = Manifest(root=root, tokenizer_kind="bytes", vocab_size=256)
    for split, docs in splits.items():
        raw = b"".join(docs)
        while len(raw) < caps[split]:  # a small stdlib: repeat the split's own documents, never another's
            raw += raw
        tokens = np.frombuffer(raw[: caps[split]], dtype=np.uint8)
        name = f"{split}_000.bin"
        sha = write_shard(root / name, tokens)
        manifest.splits[split] = [ShardInfo(name, int(tokens.size), int(tokens.size), sha)]
    manifest.write()
    return root
