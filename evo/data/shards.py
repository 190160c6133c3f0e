"""Token shards on disk, and the manifest that names them.

A shard uses the modded-nanogpt `.bin` layout, so users with their own data can point a task at it:
a header of 256 little-endian int32 (magic 20240520, version 1, number of tokens, then zeros), then the
tokens as little-endian uint16. Version 2 is evo's own variant for vocabularies of at most 256 (the byte
tokenizer): the same header with header[3] = 1, then one uint8 per token, so that a byte corpus is half
the size a GPU job must carry. `read_shard` reads both. A data folder holds shards and `manifest.json`:

    {"version": 1,
     "tokenizer": {"kind": "bytes" | "bpe", "vocab_size": 256, "file": "tokenizer.json" | null},
     "token_bytes_file": "token_bytes.npy" | null,   # bytes of each token id (int32), for bits per byte
     "splits": {"train": [{"file": "train_000.bin", "tokens": N, "bytes": B, "sha256": "..."}],
                "val": [...], "test": [...]},
     "recipe": {...} | null, "recipe_hash": "..." | null,    # how `evo data prepare` built it (re-run: no-op)
     "tokenizer_sha256": "..." | null, "token_bytes_sha256": "..." | null,
     "documents": {"train": n, ...} | null}

Bits per byte are counted from the raw bytes of each target token (`token_byte_lengths`), never from
decoded text: a byte tokenizer has 1 byte per token, a BPE its tokens' own lengths.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evo.errors import EvoError

MAGIC = 20240520
VERSION = 1
VERSION_U8 = 2  # evo's variant: uint8 tokens, for vocabularies of at most 256
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")


def encode_shard(tokens: np.ndarray, itemsize: int = 2) -> bytes:
    """The bytes of a shard holding `tokens` (uint16, or uint8 with `itemsize=1`), header included."""
    tokens = np.asarray(tokens)
    if itemsize not in (1, 2):
        raise EvoError(f"a shard stores 1 or 2 bytes per token, not {itemsize}")
    limit = 1 << (8 * itemsize)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= limit):
        raise EvoError(f"token ids must be in [0, {limit}) for a {'uint8' if itemsize == 1 else 'uint16'} shard")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION if itemsize == 2 else VERSION_U8, tokens.size)
    if itemsize == 1:
        header[3] = 1
    return header.tobytes() + tokens.astype("<u2" if itemsize == 2 else "u1").tobytes()


def write_bytes_atomic(path: Path, body: bytes) -> None:
    """Write `body` at `path` through a temporary name: a killed run never leaves half a file under it."""
    tmp = Path(path).with_suffix(Path(path).suffix + ".tmp")
    tmp.write_bytes(body)
    tmp.replace(path)


def write_shard(path: Path, tokens: np.ndarray, itemsize: int = 2) -> str:
    """Write `tokens` as a shard at `path` (uint16, or uint8 with `itemsize=1`); returns the file's sha256."""
    try:
        body = encode_shard(tokens, itemsize)
    except EvoError as e:
        raise EvoError(f"{path}: {e}") from e
    write_bytes_atomic(path, body)
    return hashlib.sha256(body).hexdigest()


def read_shard(path: Path) -> np.ndarray:
    """The tokens of a shard (memory-mapped: uint16 for version 1, uint8 for version 2), header checked."""
    path = Path(path)
    try:
        header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    except OSError as e:
        raise EvoError(f"cannot read shard {path}: {e.strerror}") from e
    if header.size < 3 or header[0] != MAGIC or header[1] not in (VERSION, VERSION_U8):
        raise EvoError(f"{path} is not a token shard (magic {MAGIC}, version {VERSION} or {VERSION_U8} expected)")
    n = int(header[2])
    itemsize = 2 if header[1] == VERSION else 1
    expected = HEADER_BYTES + itemsize * n
    if path.stat().st_size != expected:
        raise EvoError(f"{path}: header says {n} tokens ({expected} bytes), file has {path.stat().st_size}")
    return np.memmap(path, dtype="<u2" if itemsize == 2 else "u1", mode="r", offset=HEADER_BYTES, shape=(n,))


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ShardInfo:
    """One shard of a split: its file (relative to the data folder), token count, raw byte count, hash."""

    file: str
    tokens: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """`manifest.json` of a data folder."""

    root: Path
    tokenizer_kind: str = "bytes"
    vocab_size: int = 256
    tokenizer_file: str | None = None
    token_bytes_file: str | None = None
    splits: dict[str, list[ShardInfo]] = field(default_factory=dict)
    # Written by `evo data prepare`; None for a manifest a user wrote by hand for their own shards.
    recipe: dict[str, object] | None = None
    recipe_hash: str | None = None
    tokenizer_sha256: str | None = None
    token_bytes_sha256: str | None = None
    documents: dict[str, int] | None = None

    def shard_paths(self, split: str) -> list[Path]:
        """The files of `split`, in order."""
        if split not in self.splits:
            raise EvoError(f"{self.root / MANIFEST}: no split {split!r} (has {', '.join(self.splits)})")
        return [self.root / s.file for s in self.splits[split]]

    def tokens(self, split: str) -> np.ndarray:
        """All tokens of `split` as one uint16 array (read into memory; uint8 shards are widened)."""
        parts = [np.asarray(read_shard(p), dtype=np.uint16) for p in self.shard_paths(split)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)

    def token_byte_lengths(self) -> np.ndarray:
        """Bytes of each token id (int32, length `vocab_size`): 1 for the byte tokenizer."""
        if self.token_bytes_file is None:
            return np.ones(self.vocab_size, dtype=np.int32)
        lengths = np.load(self.root / self.token_bytes_file).astype(np.int32)
        if lengths.shape != (self.vocab_size,):
            raise EvoError(f"{self.root / self.token_bytes_file}: {lengths.shape[0]} lengths for a vocabulary "
                           f"of {self.vocab_size}")
        return lengths

    def verify(self) -> list[str]:
        """Files whose copy is missing or whose sha256 differs from the manifest's (empty: all good).

        Every shard, and the tokenizer and token byte lengths when the manifest records their hashes.
        """
        files = [(s.file, s.sha256) for infos in self.splits.values() for s in infos]
        for name, sha in ((self.tokenizer_file, self.tokenizer_sha256),
                          (self.token_bytes_file, self.token_bytes_sha256)):
            if name is not None and sha is not None:
                files.append((name, sha))
        bad = []
        for name, sha in files:
            p = self.root / name
            if not p.is_file() or file_sha256(p) != sha:
                bad.append(name)
        return bad

    def to_dict(self) -> dict[str, object]:
        """The manifest as JSON-ready data (the layout in this module's docstring)."""
        return {"version": VERSION,
                "tokenizer": {"kind": self.tokenizer_kind, "vocab_size": self.vocab_size, "file": self.tokenizer_file},
                "token_bytes_file": self.token_bytes_file,
                "splits": {k: [vars(s) for s in v] for k, v in self.splits.items()},
                "recipe": self.recipe, "recipe_hash": self.recipe_hash,
                "tokenizer_sha256": self.tokenizer_sha256, "token_bytes_sha256": self.token_bytes_sha256,
                "documents": self.documents}

    def write(self) -> Path:
        """Write `manifest.json` atomically; returns its path."""
        path = self.root / MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path


def load_manifest(root: Path) -> Manifest:
    """Read `root/manifest.json`; one-line errors name the file and what is wrong."""
    root = Path(root)
    path = root / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise EvoError(f"no data at {root}: cannot read {path} ({e.strerror}); build it with `evo data prepare`") from e
    except json.JSONDecodeError as e:
        raise EvoError(f"{path} is not valid JSON: {e}") from e
    try:
        tok = raw["tokenizer"]
        splits = {k: [ShardInfo(**s) for s in v] for k, v in raw["splits"].items()}
        return Manifest(root=root, tokenizer_kind=str(tok["kind"]), vocab_size=int(tok["vocab_size"]),
                        tokenizer_file=tok.get("file"), token_bytes_file=raw.get("token_bytes_file"), splits=splits,
                        recipe=raw.get("recipe"), recipe_hash=raw.get("recipe_hash"),
                        tokenizer_sha256=raw.get("tokenizer_sha256"), token_bytes_sha256=raw.get("token_bytes_sha256"),
                        documents=raw.get("documents"))
    except (KeyError, TypeError, ValueError) as e:
        raise EvoError(f"{path}: malformed manifest ({type(e).__name__}: {e})") from e
