"""The GPU health probe (evo/eval/backends/gpu_health.py): a fresh process that must get a matmul right in time.
Its faults are really caused: the probe reads the file `EVO_GPU_FAULT_FILE` names, as a node's environment
would set it."""

from __future__ import annotations

from pathlib import Path

import pytest

from evo.eval.backends.gpu_health import FAULT_ENV, probe, suspicious


def _fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, word: str) -> None:
    path = tmp_path / "fault"
    path.write_text(word)
    monkeypatch.setenv(FAULT_ENV, str(path))


def test_a_probe_that_errors_is_unhealthy_with_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fault(tmp_path, monkeypatch, "error")
    health = probe("cpu", timeout_s=60)
    assert not health.ok
    assert "CUDA error" in health.reason and "on cpu failed" in health.reason


def test_a_probe_that_hangs_is_unhealthy_after_its_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fault(tmp_path, monkeypatch, "hang")
    health = probe("cpu", timeout_s=1.0)
    assert not health.ok and "did not finish in 1 s" in health.reason
    assert 1.0 <= health.seconds < 10


@pytest.mark.slow
def test_a_right_product_is_healthy_and_a_wrong_one_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    healthy = probe("cpu", timeout_s=120)
    assert healthy.ok, healthy.reason
    assert "matmul right on cpu" in healthy.reason
    _fault(tmp_path, monkeypatch, "wrong")
    wrong = probe("cpu", timeout_s=120)
    assert not wrong.ok and "a wrong 64x64 matmul" in wrong.reason


def test_which_failed_jobs_make_a_gpu_suspect() -> None:
    assert suspicious("error", "RuntimeError: CUDA error: an illegal memory access was encountered")
    assert suspicious("crashed", "the evaluation worker exited")
    assert suspicious("timeout", None)
    assert not suspicious("invalid", "max abs error 0.5 > 1e-3: the output is wrong")
    assert not suspicious("error", "NameError: name 'tl' is not defined")


def test_the_re_probe_back_off_is_read_from_its_setting() -> None:
    from evo.errors import EvoError
    from evo.eval.backends.ray import REPROBE_S, reprobe_setting

    assert reprobe_setting("") == REPROBE_S == (60.0, 600.0)
    assert reprobe_setting("5,40") == (5.0, 40.0) and reprobe_setting("30") == (30.0, 30.0)
    assert reprobe_setting("0") is None
    for bad in ("40,5", "-1", "soon", "1,2,3"):
        with pytest.raises(EvoError, match="expected FIRST,MAX seconds"):
            reprobe_setting(bad)
