"""Hashed character n-grams: the light default embedder.

The idea is scikit-learn's `HashingVectorizer(analyzer="char", alternate_sign=True, norm="l2")`:
every character n-gram of the (whitespace-collapsed) code is hashed to one of `dim` buckets
with a hash-derived sign, the counts are summed and the vector is L2-normalised. Signed
buckets make hash collisions cancel on average instead of inflating the similarity of
unrelated programs.

Why not call `HashingVectorizer` itself: its n-gram loop is Python-level, about 2 ms for a
60-line program, and the engine embeds every proposal. Here the n-gram hashes are computed for
all positions at once with numpy (a rolling polynomial over the UTF-8 bytes, then the
splitmix64 finaliser to spread the bits), which is about 20 times faster (0.1 ms for 60 lines) and
gives the same kind of vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_PRIME = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: the rolling polynomial's base
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser constants
_MIX2 = np.uint64(0x94D049BB133111EB)
# Per-length salts, so that an n-gram and an m-gram with equal polynomial hash still differ.
_SALTS = [np.uint64(n * 0x9E3779B97F4A7C15 % 2**64) for n in range(64)]
_LOW32 = np.uint64(0xFFFFFFFF)
_U32 = np.uint64(32)


def normalise_code(text: str) -> str:
    """Collapse every run of whitespace to one space, so that re-formatting is not novelty."""
    return " ".join(text.split())  # str.split() is C-fast; a regex costs 10x more here


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place: the low bits of a polynomial hash are poor bucket indices."""
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


class NgramEmbedder:
    """Signed hashed character n-grams of whitespace-normalised code, L2-normalised.

    `dim` buckets (256 keeps a flat faiss search cheap); `ngram_range` is inclusive, as in
    scikit-learn. One changed literal in a 60-line program leaves cosine similarity above
    0.99, while unrelated programs stay below about 0.4 (they share Python's keywords).

    `duplicate_threshold`, this embedder's near-duplicate cosine: a one-literal change of a 60-line
    program sits near 0.999 (at most 0.99978 on the math seeds), a mere reformatting at 1.0.
    """

    name = "ngram"
    duplicate_threshold = 0.9999

    def __init__(self, dim: int = 256, ngram_range: tuple[int, int] = (3, 5)):
        lo, hi = ngram_range
        if dim < 2:
            raise ValueError(f"NgramEmbedder: dim must be >= 2, not {dim}")
        if not 1 <= lo <= hi:
            raise ValueError(f"NgramEmbedder: ngram_range must satisfy 1 <= low <= high, not {ngram_range}")
        self.dim = int(dim)
        self.ngram_range = (int(lo), int(hi))

    def __repr__(self) -> str:
        return f"NgramEmbedder(dim={self.dim}, ngram_range={self.ngram_range})"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed each text: float32 `(len(texts), dim)`, rows L2-normalised (zero for empty text)."""
        if isinstance(texts, str):  # a lone string would be embedded character by character
            raise TypeError("NgramEmbedder.embed takes a sequence of texts; wrap one text in a list")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self._embed_one(text)
        return out

    def _embed_one(self, text: str) -> np.ndarray:
        data = normalise_code(text).encode("utf-8")
        if not data:
            return np.zeros(self.dim, dtype=np.float32)
        lo, hi = self.ngram_range
        b = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
        grams = []
        h = b
        # h holds the hash of every n-gram of the current length n, one per start position;
        # extending it by one byte gives the (n+1)-grams. A text shorter than `lo` is one gram.
        for n in range(1, hi + 1):
            if n > 1:
                if len(h) < 2:
                    break
                h = h[:-1] * _PRIME + b[n - 1 :]
            if n >= lo or n == len(b):
                grams.append(h + _SALTS[n % 64])
        z = _mix(np.concatenate(grams))
        # Bucket in [0, 2 * dim) by multiply-shift of the low 32 bits (cheaper than %): the lower
        # half counts +1, the upper half -1. Integer bincount beats a weighted one.
        buckets = (((z & _LOW32) * np.uint64(2 * self.dim)) >> _U32).astype(np.intp)
        counts = np.bincount(buckets, minlength=2 * self.dim)
        v = (counts[: self.dim] - counts[self.dim :]).astype(np.float64)
        norm = np.linalg.norm(v)
        if norm == 0:  # signed buckets cancelled exactly (a tiny text): fall back to unsigned counts
            v = (counts[: self.dim] + counts[self.dim :]).astype(np.float64)
            norm = np.linalg.norm(v)
        return (v / norm).astype(np.float32)
