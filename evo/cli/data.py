"""`evo data`: build, check and import the token shards of the training tasks."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from evo.cli.app import cli, console, out, show_logs

_TOKENIZERS = click.Choice(["bytes", "bpe4096", "bpe8192"])
_SIZES = click.Choice(["small", "full"])


@cli.group()
def data() -> None:
    """Training data: corpora built offline, token shards and their manifest.

    \b
    Build the offline corpus:    evo data prepare          (data/full-bytes)
    For a GPU job:               evo data prepare --size small
    Use your own text files:     evo data from-text ~/texts --out data/mine
    Use your own .bin shards:    evo data from-shards ~/fineweb10B --vocab-size 50257 --token-bytes gpt2.npy
    Check a data folder:         evo data verify data/full-bytes
    """


def _summary(result: object) -> None:
    from evo.data.prepare import BuildResult

    assert isinstance(result, BuildResult)
    m = result.manifest
    table = Table("split", "documents", "raw MB", "tokens", "shards", "on disk MB")
    for split, infos in m.splits.items():
        disk = sum((m.root / s.file).stat().st_size for s in infos) / 1e6
        docs = (m.documents or {}).get(split, 0)
        table.add_row(split, f"{docs:,}", f"{sum(s.bytes for s in infos) / 1e6:.1f}",
                      f"{sum(s.tokens for s in infos):,}", str(len(infos)), f"{disk:.1f}")
    out.print(table)
    what = {"up to date": "already up to date (same recipe, every shard matches its sha256): nothing to do",
            "built": f"built {len(result.written)} shard(s)",
            "repaired": f"rebuilt {len(result.written)} file(s): {', '.join(result.written)}"}[result.status]
    dups = f"; {result.duplicates} duplicate document(s) dropped" if result.duplicates else ""
    out.print(f"{m.root}: {m.tokenizer_kind} tokenizer, vocabulary {m.vocab_size}; {what} in "
              f"{result.seconds:.1f} s{dups}", highlight=False)


@data.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Data folder to write  [default: data/SIZE-TOKENIZER]")
@click.option("--size", type=_SIZES, default="full", show_default=True,
              help="full: every installed source (about 105 MB); small: about 40 MB of training text, whole val "
                   "and test (fits what a GPU job carries).")
@click.option("--tokenizer", type=_TOKENIZERS, default="bytes", show_default=True,
              help="bytes (vocabulary 256, uint8 shards) or a BPE trained on the training split.")
@click.option("--sources", default=None, metavar="A,B,...",
              help="Comma-separated sources (see `evo data sources`)  [default: every default source installed]")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare(out_dir: Path | None, size: str, tokenizer: str, sources: str | None, quiet: bool) -> None:
    """Build the offline corpus (Debian docs, GCIDE, Shakespeare, the KJV) as token shards.

    Re-running with the same options does nothing; a shard that no longer matches its sha256 is rebuilt.
    """
    from evo.data.prepare import prepare as run_prepare
    from evo.data.sources import default_sources

    show_logs()
    names = [s.strip() for s in sources.split(",") if s.strip()] if sources else default_sources()
    target = out_dir or Path("data") / f"{size}-{tokenizer}"
    _summary(run_prepare(target, names, tokenizer, size, show_progress=not quiet))


@data.command("from-text")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Data folder to write.")
@click.option("--size", type=_SIZES, default="full", show_default=True,
              help="small: at most about 40 MB of training text; full: every file.")
@click.option("--tokenizer", type=_TOKENIZERS, default="bytes", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def from_text(folder: Path, out_dir: Path, size: str, tokenizer: str, quiet: bool) -> None:
    """Split a folder of text files (one document each) into train/val/test and tokenize it."""
    from evo.data.prepare import from_text as run_from_text

    show_logs()
    _summary(run_from_text(folder, out_dir, tokenizer, size, show_progress=not quiet))


@data.command("from-shards")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--train", "train_glob", default="*train*.bin", show_default=True, help="Training shards.")
@click.option("--val", "val_glob", default="*val*.bin", show_default=True, help="Validation shards.")
@click.option("--test", "test_glob", default=None, help="Test shards  [default: none]")
@click.option("--vocab-size", type=int, required=True, help="The tokenizer's vocabulary (GPT-2: 50257).")
@click.option("--token-bytes", type=click.Path(path_type=Path), default=None,
              help="A .npy of each token's raw byte length (needed for bits per byte unless the vocabulary is "
                   "bytes).")
def from_shards(folder: Path, train_glob: str, val_glob: str, test_glob: str | None, vocab_size: int,
                token_bytes: Path | None) -> None:
    """Write a manifest for your own shards (modded-nanogpt .bin layout) in FOLDER, in place."""
    from evo.data.imports import manifest_for_shards

    m = manifest_for_shards(folder, train_glob, val_glob, test_glob, vocab_size, token_bytes)
    counts = ", ".join(f"{k}: {len(v)} shard(s), {sum(s.tokens for s in v):,} tokens" for k, v in m.splits.items())
    out.print(f"wrote {m.root / 'manifest.json'} ({counts})", highlight=False)


@data.command()
@click.argument("folder", type=click.Path(path_type=Path))
def verify(folder: Path) -> None:
    """Check every shard of a data folder against its sha256; exit 1 naming those that differ."""
    from evo.data.shards import load_manifest

    m = load_manifest(folder)
    n = sum(len(v) for v in m.splits.values())
    with console.status(f"hashing {n} shard(s) of {folder}"):
        bad = m.verify()
    if bad:
        for name in bad:
            out.print(f"corrupt or missing: {folder / name}", highlight=False)
        out.print(f"{len(bad)} file(s) of {folder} ({n} shard(s) and the token byte lengths) do not match the "
                  "manifest; `evo data prepare` with the same options rebuilds them", highlight=False)
        sys.exit(1)
    out.print(f"{folder}: all {n} shard(s) match their sha256", highlight=False)


@data.command("sources")
def list_sources() -> None:
    """The offline corpora, whether each is installed here, and the command that installs it."""
    from evo.data.sources import SOURCES, pypi_cache

    cache = pypi_cache()
    table = Table("source", "installed", "default", "what", "install with")
    for s in SOURCES.values():
        path = s.locate(Path("/"), cache)
        table.add_row(s.name, str(path) if path else "no", "yes" if s.default else "no", s.description,
                      s.install_command(cache))
    out.print(table)

