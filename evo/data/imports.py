"""A manifest for shards a user already has (the modded-nanogpt `.bin` layout), written beside them.

With it, a task config points at the user's folder exactly as at one `evo data prepare` built: the shards
stay where they are, and `evo data verify` checks them against the hashes taken now.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evo.data.shards import SPLITS, Manifest, ShardInfo, file_sha256, read_shard
from evo.errors import EvoError

TOKEN_BYTES_FILE = "token_bytes.npy"


def manifest_for_shards(folder: Path, train: str, val: str, test: str | None, vocab_size: int,
                        token_bytes: Path | None = None) -> Manifest:
    """Write `folder/manifest.json` naming the shards matched by each glob; returns the manifest.

    `token_bytes` is a .npy of each token id's raw byte length (for GPT-2, from tiktoken:
    `[len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)]`); without it only a vocabulary of
    256 is accepted, counted as one byte per token.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvoError(f"{folder} is not a folder of shards")
    if token_bytes is None and vocab_size != 256:
        raise EvoError(f"bits per byte need each token's byte length: pass --token-bytes FILE.npy for a "
                       f"vocabulary of {vocab_size}")
    lengths = np.ones(vocab_size, dtype=np.int32)
    if token_bytes is not None:
        try:
            lengths = np.load(token_bytes).astype(np.int32)
        except (OSError, ValueError) as e:
            raise EvoError(f"cannot read token byte lengths from {token_bytes}: {e}") from e
        if lengths.shape != (vocab_size,):
            raise EvoError(f"{token_bytes} has {lengths.size} lengths, the vocabulary is {vocab_size}")
        np.save(folder / TOKEN_BYTES_FILE, lengths)
    splits: dict[str, list[ShardInfo]] = {}
    for split, pattern in zip(SPLITS, (train, val, test), strict=True):
        if pattern is None:
            continue
        files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix == ".bin")
        if not files:
            raise EvoError(f"no {split} shards match {pattern!r} in {folder}; pass --{split} GLOB")
        infos = []
        for p in files:
            tokens = read_shard(p)
            if tokens.size and int(tokens.max()) >= vocab_size:
                raise EvoError(f"{p} holds token id {int(tokens.max())}, beyond the vocabulary of {vocab_size}")
            counted = int(np.bincount(tokens, minlength=vocab_size) @ lengths)
            infos.append(ShardInfo(p.relative_to(folder).as_posix(), int(tokens.size), counted, file_sha256(p)))
        splits[split] = infos
    overlap = {s.file for s in splits["train"]} & {s.file for s in splits["val"]}
    if overlap:
        raise EvoError(f"{', '.join(sorted(overlap))} match both --train and --val; make the globs disjoint")
    m = Manifest(root=folder, tokenizer_kind="bytes" if vocab_size == 256 and token_bytes is None else "external",
                 vocab_size=vocab_size, token_bytes_file=TOKEN_BYTES_FILE if token_bytes is not None else None,
                 splits=splits)
    m.write()
    return m
