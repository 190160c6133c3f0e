"""Tokenizers for the training corpus: raw bytes (vocabulary 256), or a byte-level BPE trained with `tokenizers`.

Both reserve id 0 as the document separator, placed before every document and counted as 0 bytes; the
texts never contain a NUL byte (`sources.clean_text` removes it), so id 0 is never a byte of text. Every
other id stands for a fixed string of raw bytes (`token_bytes`), so bits per byte are the sum of the
target tokens' byte lengths, never the length of decoded text (decoding replaces broken UTF-8 and would
miscount).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evo.errors import EvoError

if TYPE_CHECKING:  # the `tokenizers` package is imported only by a BPE build
    from tokenizers import Tokenizer

SEPARATOR = 0
KINDS = {"bytes": 256, "bpe4096": 4096, "bpe8192": 8192}
_SEPARATOR_TEXT = "\x00"  # the BPE's special token; never found in a cleaned text, so never matched inside one


class ByteTokenizer:
    """One token per byte; id 0 (NUL, absent from every text) is the document separator."""

    kind = "bytes"
    vocab_size = 256
    itemsize = 1  # stored as uint8 shards (version 2): half the size of uint16

    def encode_batch(self, texts: list[bytes]) -> list[np.ndarray]:
        """Each text as an array of its bytes."""
        return [np.frombuffer(t, dtype=np.uint8) for t in texts]

    def token_bytes(self) -> list[bytes]:
        """The raw bytes of each id (the separator: none)."""
        return [b""] + [bytes([i]) for i in range(1, 256)]


@cache
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of the byte-level alphabet (GPT-2's `bytes_to_unicode`) that `tokenizers` uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class BPETokenizer:
    """A byte-level BPE (`tokenizers`): every byte sequence encodes, every id is a fixed byte string."""

    kind = "bpe"
    itemsize = 2

    def __init__(self, tokenizer: Tokenizer, reused: bool = False):
        self.tokenizer = tokenizer
        self.reused = reused  # loaded from the data folder's own tokenizer.json: already saved there
        self.vocab_size = tokenizer.get_vocab_size()
        if tokenizer.token_to_id(_SEPARATOR_TEXT) != SEPARATOR:
            raise EvoError("the BPE tokenizer has no document separator at id 0; rebuild it with `evo data prepare`")

    @classmethod
    def train(cls, texts: Iterable[bytes], vocab_size: int, length: int | None = None) -> BPETokenizer:
        """Train on `texts` (the training split only) to at most `vocab_size` ids."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        # No normalizer: any change to the text (NFC, lowercasing) would make token bytes differ from raw bytes.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[_SEPARATOR_TEXT], min_frequency=2,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator((t.decode("utf-8") for t in texts), trainer, length=length)
        return cls(tok)

    @classmethod
    def load(cls, path: Path) -> BPETokenizer:
        """The tokenizer saved at `path` (`tokenizer.json`)."""
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(path)), reused=True)
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad file
            raise EvoError(f"cannot load the BPE tokenizer {path}: {e}; rebuild it with `evo data prepare`") from e

    def save(self, path: Path) -> None:
        """Write `tokenizer.json` atomically."""
        tmp = path.with_suffix(".json.tmp")
        self.tokenizer.save(str(tmp))
        tmp.replace(path)

    def encode_batch(self, texts: list[bytes]) -> list[np.ndarray]:
        """Each text as uint16 ids (`tokenizers` spreads the batch over the cores)."""
        encs = self.tokenizer.encode_batch([t.decode("utf-8") for t in texts], add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint16) for e in encs]

    def token_bytes(self) -> list[bytes]:
        """The raw bytes of each id, read from the byte-level vocabulary (special tokens: none)."""
        table = _unicode_to_byte()
        special = {t.content for t in self.tokenizer.get_added_tokens_decoder().values()}
        out = []
        for i in range(self.vocab_size):
            piece = self.tokenizer.id_to_token(i)
            if piece is None or piece in special:
                out.append(b"")
                continue
            try:
                out.append(bytes(table[c] for c in piece))
            except KeyError as e:
                raise EvoError(f"BPE token {i} ({piece!r}) is not byte-level; rebuild with `evo data prepare`") from e
        return out


Tok = ByteTokenizer | BPETokenizer


def byte_lengths(tok: Tok) -> np.ndarray:
    """Bytes of each id (int32, one per id): what `Manifest.token_byte_lengths` returns."""
    return np.array([len(b) for b in tok.token_bytes()], dtype=np.int32)


def decode(tok: Tok, ids: np.ndarray) -> bytes:
    """The raw bytes of `ids` (separators vanish): the inverse of encoding, byte for byte."""
    table = tok.token_bytes()
    return b"".join(table[int(i)] for i in ids)


def check_kind(kind: str) -> int:
    """The vocabulary size a `--tokenizer` name asks for; an unknown name is a one-line error."""
    if kind not in KINDS:
        raise EvoError(f"unknown tokenizer {kind!r}; choose one of {', '.join(KINDS)}")
    return KINDS[kind]

