"""benchmarks/training_gpu.py on the CPU: what it keeps between calls (a run in its file is never run again; a
call stops before a run it cannot finish), the data and run archives that travel to a lent GPU, the target it
writes into the time_to_target task, its tables; and, slow, the smoke configuration end to end through the
pipeline and `evo run` / `evo resume`, a second call making only what the first left."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from evo.errors import EvoError
from evo.eval.training.target import decide, resolve_rule
from evo.store import Store
from tests.training_corpus import build_corpus

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "training_gpu.py"
H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("training_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu = _bench()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_corpus(tmp_path_factory.mktemp("corpus") / "tiny", train_bytes=200_000, val_bytes=8_192)


def _run(kind: str, which: str, seed: int, bpb: float | None, device: str = H100, budget_s: float = 120.0,
         **extra: object) -> dict:
    return {"kind": kind, "which": which, "seed": seed, "budget_s": budget_s, "data": "d", "device": device,
            "source": "s", "commit": "abc1234", "torch": "2.11.0", "python": "3.12.3",
            "date": "2026-12-07T10:00:00+00:00", "ok": True, "val_bpb": bpb, "val_loss": None if bpb is None else bpb * 0.69,
            "train_s": 119.0, "params": 25e6, "tokens_seen": 6e7, "audit_passed": True, "failure": None,
            "error": None, "wall_s": 150.0, "failed_checks": [], **extra}


def _write(path: Path, runs: list[dict], search: dict | None = None) -> Path:
    path.write_text(json.dumps({"version": 1, "runs": runs, "calls": [], "search": search}))
    return path


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *argv], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=900)


def _smoke(corpus: Path, json_path: Path) -> list[str]:
    return ["--smoke", "--data", str(corpus), "--json", str(json_path)]


def test_a_run_in_the_file_is_not_run_again_and_a_call_stops_before_a_run_it_cannot_finish(corpus: Path,
                                                                                         tmp_path: Path) -> None:
    args = argparse.Namespace(smoke=True, data=str(corpus), commit="abc1234")
    ctx = gpu.Context(args)
    results = gpu.Results(tmp_path / "r.json", None)
    source = gpu.SEED_FILES["weak"].read_text()
    plan = [({"kind": "seed", "which": "weak", "seed": s, "budget_s": 8.0, "data": ctx.data_id,
              "device": ctx.device, "source": gpu.sha(source)}, "training/lm_budget", source) for s in (0, 1, 2)]
    results.add({**plan[0][0], "ok": True, "wall_s": 30.0})
    results.add({**plan[1][0], "ok": False, "wall_s": 30.0})
    # Seed 2 would take about 1.1 x 30 s: with 20 s left it is not started, and the recorded ones are skipped.
    assert gpu.run_list(results, ctx, gpu.Clock(20.0), plan, False, "seed", 8.0) == (0, 1)
    assert gpu.run_list(results, ctx, gpu.Clock(20.0), plan, True, "seed", 8.0) == (0, 2)  # the failed one too
    assert len(gpu.Results(tmp_path / "r.json", None).runs) == 2


def test_ttt_sizes_its_schedule_from_the_strong_seed_s_steps_in_the_target_budget(corpus: Path,
                                                                                   tmp_path: Path) -> None:
    ctx = gpu.Context(argparse.Namespace(smoke=True, data=str(corpus), commit="abc1234"))
    ctx.smoke, ctx.device = False, H100  # as on the GPU whose runs the file holds
    results = gpu.Results(_write(tmp_path / "r.json", []), None)
    assert gpu.auto_steps(results, ctx, 120.0, 0.6) is None  # no strong runs: the seed's own STEPS
    for seed, steps in enumerate((4000, 4200)):  # tokens seen = steps x batch 32 x seq_len 1024
        results.add(_run("seed", "strong", seed, 1.05, tokens_seen=steps * 32 * 1024))
    results.add(_run("seed", "strong", 2, 1.05, device=H200, tokens_seen=9000 * 32 * 1024))
    assert gpu.auto_steps(results, ctx, 120.0, 0.6) == 2450  # 0.6 x 4100, to 50
    text, steps = gpu.ttt_source(2450)
    original = (gpu.TTT / "seed.py").read_text()
    assert steps == 2450 and text == original.replace("STEPS = 3000  #", "STEPS = 2450  #", 1)
    assert "CPU_STEPS = 20" in text and gpu.ttt_source(None) == (original, 3000)


def test_bad_input_is_a_one_line_error(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_path = tmp_path / "r.json"
    assert gpu.main(["seeds", "--which", "medium", *_smoke(corpus, json_path)]) == 2
    assert capsys.readouterr().err == "error: --which 'medium': choose among weak, strong (comma separated)\n"
    assert gpu.main(["ttt", *_smoke(corpus, json_path)]) == 2
    assert "Run `seeds --which weak` first" in capsys.readouterr().err
    assert gpu.main(["seeds", "--data", str(tmp_path / "none"), "--json", str(json_path)]) == 2
    assert "no data at" in capsys.readouterr().err and not json_path.exists()
    assert "python3 -m pip install" in _cli("--help").stdout  # the help says how to run it on a lent GPU


def test_the_data_travels_packed_and_is_checked_against_its_manifest_when_unpacked(corpus: Path,
                                                                                   tmp_path: Path) -> None:
    data = shutil.copytree(corpus, tmp_path / "tiny")
    assert gpu.main(["pack-data", "--data", str(data)]) == 0
    shutil.rmtree(data)
    assert gpu.ensure_data(data) == data.resolve() and (data / "manifest.json").is_file()
    with (data / "train_000.bin").open("r+b") as f:  # a damaged shard, packed as it is
        f.seek(200)
        f.write(b"\x01\x02\x03")
    with tarfile.open(tmp_path / "tiny.tar.gz", "w:gz") as tar:
        tar.add(data, arcname="tiny")
    shutil.rmtree(data)
    with pytest.raises(EvoError, match="does not match its manifest: train_000.bin"):
        gpu.ensure_data(data)


def test_the_search_s_run_travels_as_its_store_without_scratch_or_lock(tmp_path: Path) -> None:
    from benchmarks.training_gpu_search import pack_run, unpack_run

    run = tmp_path / "runs" / "training_search"
    store = Store.in_dir(run)
    store.set_meta("config", {"budget": 20, "train_budget_s": 60.0})
    store.close()
    (run / "scratch" / "job").mkdir(parents=True)
    (run / "evo.lock").touch()
    archive, out = run.with_name("training_search.tar.gz"), tmp_path / "out"
    pack_run(run, archive, out)
    assert (out / archive.name).read_bytes() == archive.read_bytes()
    (run / "stale").touch()  # a run dir an earlier call left on this machine: the carried archive replaces it
    unpack_run(run, archive)
    assert sorted(p.name for p in run.iterdir()) == ["evo.db"]
    assert Store.in_dir(run, readonly=True).get_meta("config")["train_budget_s"] == 60.0


def test_set_target_writes_the_weak_seed_s_mean_into_the_gpu_rule_only(tmp_path: Path) -> None:
    task = shutil.copytree(gpu.TTT, tmp_path / "time_to_target")
    weak = [_run("seed", "weak", s, b) for s, b in enumerate((1.20, 1.21, 1.22))]
    json_path = _write(tmp_path / "r.json", weak + [_run("seed", "weak", s, 1.10 + s / 100, H200) for s in (0, 1)]
                       + [_run("seed", "strong", 0, 1.0), _run("seed", "weak", 3, 1.5, budget_s=60.0)])
    toml = str(task / "task.toml")
    assert gpu.main(["set-target", "--json", str(json_path), "--task-toml", toml]) == 0
    assert resolve_rule(task, "cuda").target_bpb == pytest.approx(1.21)  # the H100's 3 runs at 120 s
    assert resolve_rule(task, "cpu").target_bpb == 4.5
    assert "over 3 seeds at 120 s on NVIDIA H100 80GB HBM3" in (task / "task.toml").read_text()
    assert gpu.main(["set-target", "--json", str(json_path), "--task-toml", toml, "--device", H200]) == 0
    assert resolve_rule(task, "cuda").target_bpb == pytest.approx(1.105)
    _write(json_path, weak[:1])
    assert gpu.main(["set-target", "--json", str(json_path), "--task-toml", toml]) == 2


def test_the_table_gives_mean_and_std_the_t_test_and_what_failed(tmp_path: Path) -> None:
    from benchmarks.training_gpu_report import table

    weak = [_run("seed", "weak", s, b) for s, b in enumerate((1.20, 1.21, 1.22))]
    strong = [_run("seed", "strong", s, b) for s, b in enumerate((1.05, 1.06))]
    ttt = [_run("ttt", "steps=1500", s, b, budget_s=300.0, target_bpb=1.21, train_s=t)
           for s, (b, t) in enumerate(((1.180, 61.0), (1.185, 62.0), (1.182, 61.5)))]
    failed = _run("seed", "strong", 2, None, ok=False, failure="timeout", error="no model after the budget")
    search = {"evaluations": 20, "valid": 18, "budget_s": 60.0, "devices": [H100],
              "seeds": {"seed.py": 1.31, "strong.py": 1.15}, "best": {"val_bpb": 1.12, "operator": "params",
                                                                       "params": 3.1e7}}
    data = json.loads(_write(tmp_path / "r.json", weak + strong + ttt + [failed], search).read_text())
    data["calls"] = [{"command": "seeds", "argv": ["seeds", "--commit", "abc1234"], "device": H100,
                      "date": "2026-12-07T10:00:00+00:00"}]
    text = table(data, ["weak", "strong"], decide, 0.01)
    assert f"| {H100} | 120 | weak | 3 | 1.2100 ± 0.0100 | 0: 1.2000, 1: 1.2100, 2: 1.2200 |" in text
    assert f"| {H100} | 120 | strong | 2 | 1.0550 ± 0.0071 |" in text
    assert "| 20 (18) | seed.py: 1.3100, strong.py: 1.1500 | **1.1200** | params | 31,000,000 |" in text
    p = decide([1.180, 1.185, 1.182], 1.21, 0.01).p_value
    assert f"| steps=1500 | 1.2100 | 3 | 1.1823 ± 0.0025 | {p:.2g} | True | 61.5 ± 0.5 |" in text
    assert "Failed runs: seed strong seed 2 on NVIDIA H100 80GB HBM3: timeout (no model after the budget)" in text
    assert "python3 benchmarks/training_gpu.py seeds --commit abc1234    # NVIDIA H100 80GB HBM3, 2026-12-07" in text


@pytest.mark.slow  # two trainings and scorings of the weak seed through the pipeline: about 90 s on 2 busy cores
def test_seeds_a_second_call_runs_only_the_seed_the_first_did_not(corpus: Path, tmp_path: Path) -> None:
    json_path, out = tmp_path / "r.json", tmp_path / "out"
    first = _cli("seeds", "--budget-s", "8", "--seeds", "0", "--which", "weak", *_smoke(corpus, json_path),
                 env={"OUT": str(out)})
    assert first.returncode == 0, first.stderr
    before = json.loads(json_path.read_text())["runs"]
    assert [(r["which"], r["seed"], r["ok"], r["audit_passed"]) for r in before] == [("weak", 0, True, True)]
    second = _cli("seeds", "--budget-s", "8", "--seeds", "0,1", "--which", "weak", *_smoke(corpus, json_path))
    assert second.returncode == 0, second.stderr
    assert "seeds: 1 run(s) made" in second.stdout and "weak seed 0" not in second.stdout
    runs = json.loads(json_path.read_text())["runs"]
    assert runs[0] == before[0] and [r["seed"] for r in runs] == [0, 1] and 2.0 < runs[1]["val_bpb"] < 8.5
    assert json.loads((out / "r.json").read_text())["runs"] == before  # the copy in $OUT, as it was then


@pytest.mark.slow  # three evaluations through `evo run` and `evo resume`: about 2.5 minutes on 2 busy cores
def test_search_resumes_from_its_archive_and_evaluates_nothing_twice(corpus: Path, tmp_path: Path) -> None:
    json_path, run = tmp_path / "r.json", tmp_path / "runs" / "search"
    search = ["search", "--budget-s", "8", "--run-dir", str(run), *_smoke(corpus, json_path)]
    first = _cli(*search, "--evals", "2", env={"OUT": str(tmp_path / "out")})
    assert first.returncode == 0, first.stderr + first.stdout
    assert (tmp_path / "out" / "search.tar.gz").is_file()
    seeds = [(r["id"], r["operator"]) for r in json.loads(json_path.read_text())["search"]["rows"]]
    assert sorted(op for _, op in seeds) == ["seed", "seed"]
    shutil.rmtree(run)  # a fresh machine: only the archive came along
    second = _cli(*search, "--evals", "3")
    assert second.returncode == 0, second.stderr + second.stdout
    assert "search: 1 run(s) made" in second.stdout
    state = json.loads(json_path.read_text())["search"]
    assert state["evaluations"] == 3 and [(r["id"], r["operator"]) for r in state["rows"][:2]] == seeds
    assert state["budget_s"] == 8.0 and state["seeds"].keys() == {"seed.py", "strong.py"}
    third = _cli(*search, "--evals", "3")
    assert "3 of 3 evaluations done already" in third.stdout and "search: 0 run(s) made" in third.stdout


@pytest.mark.slow  # two seeds of the time-to-target seed through the pipeline: about 80 s on 2 busy cores
def test_ttt_tests_the_seeds_against_the_weak_seed_s_bpb(corpus: Path, tmp_path: Path) -> None:
    data_id = gpu.sha((corpus / "manifest.json").read_bytes())
    weak = [_run("seed", "weak", s, b, device="cpu (smoke)", budget_s=8.0, data=data_id) for s, b in
            enumerate((7.90, 7.92))]
    json_path = _write(tmp_path / "r.json", weak)
    first = _cli("ttt", "--target-budget-s", "8", *_smoke(corpus, json_path))
    assert first.returncode == 0, first.stderr + first.stdout
    assert "target 7.9100 bpb (the weak seed's mean over 2 seeds at 8 s)" in first.stdout
    runs = [r for r in json.loads(json_path.read_text())["runs"] if r["kind"] == "ttt"]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["ok"] and r["val_bpb"] < 7.91 for r in runs)
    d = decide([r["val_bpb"] for r in runs], 7.91, 0.01)
    assert d.valid and f"(p = {d.p_value:.3g}); time to target" in first.stdout
    again = _cli("ttt", "--target-budget-s", "8", *_smoke(corpus, json_path))
    assert "ttt: 0 run(s) made" in again.stdout
