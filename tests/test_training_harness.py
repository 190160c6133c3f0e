"""The training harness on real processes: the read guard, the watch from /proc, the settings, the trusted
bits per byte (a uniform model scores exactly 8 on bytes), the seed through the pipeline and `evo run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evo.errors import EvoError
from evo.eval.pipeline import evaluate_source, verdict_of
from evo.eval.training.link import quiet
from evo.eval.training.spec import BUDGET_ENV, DATA_ENV, resolve_spec
from evo.task import load_task
from tests.training_corpus import build_corpus

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "tasks" / "training" / "lm_budget" / "seed.py"
SMOKE = {"device": "cpu", "eval_tokens": 4096, "rescore_batches": 1, "probe_trials": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus"), train_bytes=200_000, val_bytes=8_192)


def test_the_read_guard_refuses_the_held_out_files_only(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for name in ("train_000.bin", "val_000.bin", "test_000.bin"):
        (tmp_path / "data" / name).write_bytes(b"x")
    (tmp_path / "job" / "a").mkdir(parents=True)
    code = textwrap.dedent(f"""
        import json, os
        from evo.eval.training import read_guard
        d = {str(tmp_path)!r}
        held = [d + "/data/val_000.bin", d + "/data/test_000.bin"]
        status = read_guard.deny_reads(held)
        probe = read_guard.probe(held + [d + "/data/train_000.bin"])
        open(d + "/job/a/f", "w").write("1")
        os.rename(d + "/job/a/f", d + "/job/f")  # a rename into another folder, as Triton's cache makes
        print(json.dumps({{"status": status, "probe": probe, "readme": open({str(REPO / 'README.md')!r}).read(3)}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    got = json.loads(out.stdout)
    if not got["status"]["active"]:
        pytest.skip(f"no Landlock here: {got['status']['reason']}")
    assert got["probe"] == {str(tmp_path / "data/val_000.bin"): "refused", str(tmp_path / "data/test_000.bin"): "refused",
                            str(tmp_path / "data/train_000.bin"): "READABLE"}
    assert got["readme"] == "# e"


def _under_its_own_parent(code: str) -> tuple[subprocess.Popen, list[int]]:
    """`code` run by a child of a parent of its own (as the sandbox's init is the training process's parent);
    returns the parent and the pids `code` prints once it is ready (its own first)."""
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys\n"
                               f"subprocess.run([sys.executable, '-c', {code!r}])"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return parent, [int(p) for p in parent.stdout.readline().split()]


READY = "import os, sys, threading\n"
IDLE = READY + "print(os.getpid(), flush=True); sys.stdin.read()"
BUSY = READY + ("threading.Thread(target=lambda: [0 for _ in iter(int, 1)], daemon=True).start()\n"
                "print(os.getpid(), flush=True); sys.stdin.read()")
FORKS = READY + ("kid = os.fork()\nif kid == 0:\n    os.setsid(); [0 for _ in iter(int, 1)]\n"
                 "print(os.getpid(), kid, flush=True); sys.stdin.read()")


@pytest.mark.parametrize(("code", "found"), [(IDLE, None), (BUSY, "thread"), (FORKS, "process")],
                         ids=["idle", "busy thread", "process left"])
def test_quiet_sees_a_busy_thread_and_a_process_left_running(code: str, found: str | None) -> None:
    parent, pids = _under_its_own_parent(code)
    try:
        reason = quiet(pids[0], window_s=0.5)
        assert (reason is None) if found is None else (reason is not None and found in reason), reason
    finally:
        for pid in reversed(pids):
            os.kill(pid, 9)
        parent.kill()
        parent.wait()


def test_settings_come_from_the_task_then_the_environment(corpus: Path, monkeypatch) -> None:
    root = load_task("training/lm_budget").root
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(EvoError, match="evo data prepare"):
        resolve_spec(root, device="cpu")
    monkeypatch.setenv(DATA_ENV, str(corpus))
    spec = resolve_spec(root, device="cpu")
    assert (spec.budget_s, spec.seq_len, spec.device) == (20, 128, "cpu")  # the smoke configuration
    assert resolve_spec(root, device="cuda").budget_s == 300
    monkeypatch.setenv(BUDGET_ENV, "42")
    assert resolve_spec(root, device="cpu").budget_s == 42.0


UNIFORM = '''
import torch
import torch.nn as nn


class Uniform(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        return self.scale * torch.ones(*idx.shape, self.vocab_size)


def build_model(info):
    return Uniform(info.vocab_size)


def train(data, budget):
    return build_model(data)
'''


def test_the_loss_is_the_harness_s_a_uniform_model_scores_8_bits_per_byte(corpus: Path, tmp_path: Path) -> None:
    result = evaluate_source("training/lm_budget", UNIFORM, scratch=tmp_path, data=str(corpus), budget_s=20, **SMOKE)
    assert result.ok, result.error
    assert result.metrics["val_bpb"] == pytest.approx(8.0, abs=1e-6)  # ln 256 in fp32
    assert result.metrics["params"] == 1
    assert verdict_of(result).passed


@pytest.mark.slow  # 20-30 s end to end: `make test-slow` (keeps `make test` under 20 minutes)
def test_the_seed_trains_and_passes_the_full_audit(corpus: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    result = evaluate_source("training/lm_budget", SEED.read_text(), scratch=tmp_path, data=str(corpus),
                             budget_s=15, **SMOKE)
    assert result.ok, result.error
    verdict = verdict_of(result)
    assert verdict.passed
    names = {name for name, passed, _ in result.checks if passed}
    assert {"dynamic:causality", "dynamic:data_split", "dynamic:budget", "dynamic:no_carried_state",
            "dynamic:harness_loss", "dynamic:model_unchanged"} <= names
    assert result.metrics["params"] == 478720  # 2 layers, d=128, its tied embedding counted in both names
    assert result.metrics["tokens_seen"] > 0 and result.metrics["val_bpb"] < 8.0
    assert result.metrics["train_s"] <= 15 + 4 and time.monotonic() - start < 180
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_evo_run_trains_and_scores_through_the_pipeline(corpus: Path, tmp_path: Path) -> None:
    env = {**os.environ, DATA_ENV: str(corpus), BUDGET_ENV: "20", "EVO_TRAIN_DEVICE": "cpu"}
    run_dir = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "evo", "run", "training/lm_budget", "--run-dir", str(run_dir),
                    "--budget", "2", "--quiet"], env=env, cwd=REPO, check=True, timeout=600)
    from evo.store.sqlite import Store

    store = Store(run_dir / "evo.db", readonly=True)
    try:
        scored = [p for p in store.best_programs() if p.metrics.get("val_bpb")]
        assert store.count_evaluations() == 2 and scored, "the seed was trained and scored through the pipeline"
        assert scored[0].metrics["params"] > 0
    finally:
        store.close()


PATIENT = UNIFORM.replace("def train(data, budget):\n", "def train(data, budget):\n"
                          "    while budget.remaining() > 0.5:\n        pass\n")


@pytest.mark.slow
def test_the_short_rung_trains_for_a_tenth_of_the_budget(corpus: Path, tmp_path: Path) -> None:
    """A candidate that waits out its budget: at the `short` rung it is handed a tenth of it, at the full one all."""
    from evo.eval.pipeline import Pipeline
    from evo.eval.training.harness import TrainingEvaluator
    from evo.program import Program

    task = load_task("training/lm_budget")
    spec = resolve_spec(task.root, data=str(corpus), budget_s=40, **SMOKE)
    backend = TrainingEvaluator(spec, 1, tmp_path / "scratch")
    with Pipeline(task, backend) as pipeline:
        short = pipeline.evaluate_sync(Program(source=PATIENT), "short")
    assert short.ok, short.error
    assert short.metrics["train_s"] < 4 + spec.grace_s  # a tenth of 40 s, the grace on top; the full rung waits ~40
