"""Reading seed sources (see the package docstring for the forms a SOURCE takes) into `Seed`s."""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evo.errors import EvoError
from evo.program import MAIN_FILE, Program, Source
from evo.store import DB_NAME
from evo.task import Task

_SPEC = re.compile(r"^(?P<path>[^@:]+?)(?:@(?P<rev>[^:]+))?(?::(?P<glob>.+))?$")
_LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "LICENCE.txt", "COPYING")
_MAX_SEED_BYTES = 1 << 20  # a seed is a program a person or model reads: a 1 MiB file is a data file


@dataclass(frozen=True)
class SourceSpec:
    """A SOURCE string taken apart: the path, a git revision (REV) and a glob, where given."""

    text: str
    path: Path
    rev: str | None = None
    glob: str | None = None


@dataclass
class Seed:
    """A candidate from outside the run and where it came from: `provenance` has `source` (what the user
    named), `kind` (file, folder, git, export, run, archive), `imported` (when it was read, UTC), and where
    known `commit`, `path`, `licence`, `author`, and the origin's own numbers (`program_id`, `value`, `device`)."""

    source: Source
    provenance: dict[str, Any] = field(default_factory=dict)

    def program(self) -> Program:
        """A fresh proposed `Program` (operator `seed`) carrying the provenance in its meta."""
        name = Path(str(self.provenance.get("path") or self.provenance.get("program_id") or "seed")).name
        return Program(source=self.source, operator="seed", meta={"seed_file": name, "provenance": self.provenance})


def parse_source(text: str) -> SourceSpec:
    """`PATH`, `PATH:GLOB`, `PATH@REV` or `PATH@REV:GLOB`; a path that exists as written is taken whole."""
    if Path(text).exists():
        return SourceSpec(text, Path(text))
    m = _SPEC.match(text)
    if m is None or not Path(m["path"]).exists():
        raise EvoError(f"seed source {text!r}: no such file or folder. Give a file, a folder (FOLDER:GLOB), a git "
                       "repository (REPO@REV:GLOB), an export (.jsonl, .parquet), a run directory or an archive")
    return SourceSpec(text, Path(m["path"]), m["rev"], m["glob"])


def read_sources(texts: list[str], task: Task, licence: str | None = None) -> list[Seed]:
    """Every seed of every source, in the order given; an empty source is an error naming it."""
    return [seed for text in texts for seed in read_source(text, task, licence)]


def read_source(text: str, task: Task, licence: str | None = None) -> list[Seed]:
    """The seeds of one SOURCE for `task`; `licence` (when given) is theirs where the source names none (a
    LICENSE file or an archive row's own word always wins: provenance records what the source says)."""
    spec = parse_source(text)
    path = spec.path
    if spec.rev is not None or (path.is_dir() and (path / ".git").exists() and not (path / DB_NAME).is_file()):
        seeds = _git(spec)
    elif path.is_dir() and (path / DB_NAME).is_file():
        from evo.seeding.tables import run_elites  # the store and the population: only for run directories

        seeds = run_elites(spec, task)
    elif path.is_dir():
        seeds = _folder(spec)
    elif path.suffix in (".jsonl", ".parquet"):
        from evo.seeding.tables import table_rows

        seeds = table_rows(spec, task)
    else:
        if spec.glob:
            raise EvoError(f"seed source {text!r}: a glob applies to a folder or a git repository, not to a file")
        seeds = [Seed(_read_text(path, text), {"kind": "file", "path": str(path.resolve())})]
    if not seeds:
        raise EvoError(f"seed source {text!r} holds no program for task {task.name}: check the glob (default "
                       "*.py), the rows' task, or that the run has valid programs")
    found = _licence_of(path) if spec.rev is None and path.is_dir() else None
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for seed in seeds:
        seed.provenance = {"source": text, **seed.provenance, "imported": now}
        chosen = seed.provenance.get("licence") or found or licence
        if chosen:
            seed.provenance["licence"] = chosen
    return seeds


def _read_text(path: Path, where: str) -> str:
    try:
        if path.stat().st_size > _MAX_SEED_BYTES:
            raise EvoError(f"seed source {where!r}: {path} is over 1 MiB, not a program; narrow the glob")
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise EvoError(f"seed source {where!r}: cannot read {path} ({getattr(e, 'strerror', None) or e})") from e
    if not text.strip():
        raise EvoError(f"seed source {where!r}: {path} is empty, not a program")
    return text


def glob_regex(glob: str) -> re.Pattern[str]:
    """A glob over relative POSIX paths: `*` and `?` stay inside one folder, `**/` spans any folders."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(glob[i], re.escape(glob[i])))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _folder(spec: SourceSpec) -> list[Seed]:
    pattern = glob_regex(spec.glob or "*.py")
    files = sorted(p for p in spec.path.rglob("*") if p.is_file() and pattern.match(p.relative_to(spec.path).as_posix()))
    return [Seed(_read_text(p, spec.text), {"kind": "folder", "path": p.relative_to(spec.path).as_posix()})
            for p in files]


def _git_out(repo: Path, *args: str, where: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise EvoError(f"seed source {where!r}: cannot run git ({e.strerror}); install git") from e
    if proc.returncode != 0:
        raise EvoError(f"seed source {where!r}: git {' '.join(args[:2])} failed: "
                       f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return proc.stdout


def _git(spec: SourceSpec) -> list[Seed]:
    repo, where = spec.path, spec.text
    _git_out(repo, "rev-parse", "--git-dir", where=where)  # "not a git repository" names the folder
    rev = spec.rev or "HEAD"
    try:
        commit = _git_out(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", where=where).strip()
    except EvoError:
        raise EvoError(f"seed source {where!r}: {repo} has no commit, tag or branch {rev!r} "
                       f"(`git -C {repo} tag` and `git -C {repo} log` list them)") from None
    pattern = glob_regex(spec.glob or "**/*.py")
    names = [n for n in _git_out(repo, "ls-tree", "-r", "--name-only", "-z", commit, where=where).split("\0") if n]
    licence = next((_spdx(_git_out(repo, "show", f"{commit}:{n}", where=where)) for n in names
                    if n in _LICENCE_FILES), None)
    seeds = []
    for name in sorted(n for n in names if pattern.match(n)):
        text = _git_out(repo, "show", f"{commit}:{name}", where=where)
        prov = {"kind": "git", "repository": str(repo.resolve()), "commit": commit, "path": name}
        # Who last changed this file at that commit: the author a reader would credit
        author = _git_out(repo, "log", "-1", "--format=%an <%ae>", commit, "--", name, where=where).strip()
        if author:
            prov["author"] = author
        if spec.rev:
            prov["rev"] = spec.rev
        if licence:
            prov["licence"] = licence
        seeds.append(Seed(text, prov))
    return seeds


def _licence_of(folder: Path) -> str | None:
    for name in _LICENCE_FILES:
        if (folder / name).is_file():
            try:
                return _spdx((folder / name).read_text(errors="replace"))
            except OSError:
                return None
    return None


def _spdx(text: str) -> str:
    """The licence's SPDX id where its text names a common one; else its first line."""
    head = text[:2000]
    for needle, spdx in (("Apache License", "Apache-2.0"), ("MIT License", "MIT"), ("Permission is hereby granted, "
                         "free of charge", "MIT"), ("BSD 3-Clause", "BSD-3-Clause"), ("BSD 2-Clause", "BSD-2-Clause"),
                         ("GNU LESSER GENERAL PUBLIC", "LGPL"), ("GNU GENERAL PUBLIC LICENSE", "GPL"),
                         ("Mozilla Public License", "MPL-2.0")):
        if needle.lower() in head.lower():
            return spdx
    first = next((line.strip() for line in head.splitlines() if line.strip()), "")
    return first[:80] or "unknown"


def source_of_row(row: dict[str, Any]) -> Source | None:
    """A row's program: `source` (the main file) with `files` (the others) where a row has them."""
    text = row.get("source")
    if not isinstance(text, str):
        return None
    files = row.get("files")
    if isinstance(files, str):
        files = json.loads(files) if files.strip() else None
    if isinstance(files, dict) and files:
        return {MAIN_FILE: text, **{str(k): str(v) for k, v in files.items()}}
    return text
