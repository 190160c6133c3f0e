"""A reference job's expected outputs on a full disk: the error says so, and no partial file is left."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from evo.eval.reference_data import save_expected


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB file system (tmpfs), where this machine lets us mount one."""
    where = tmp_path / "disk"
    where.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    except FileNotFoundError:
        pytest.skip("no `mount` command here")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode(errors='replace').strip()[:200]}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)  # lazy: a file still open does not keep it


def test_a_full_disk_is_named_in_the_error_and_no_partial_file_stays(small_disk: Path) -> None:
    path = small_disk / "expected.pt"
    with pytest.raises(OSError) as caught:
        save_expected((torch.zeros(1 << 20),), path)  # 4 MB on a 2 MB disk
    assert caught.value.errno == errno.ENOSPC and "no space left on the disk of" in str(caught.value)
    assert "4 MB" in str(caught.value) and not path.exists()
    save_expected((torch.ones(1024),), path)  # what fits is written and reads back
    assert torch.equal(torch.load(path, weights_only=True)[0], torch.ones(1024))
