"""A real `evo run` whose LLM operators talk to a real `transformers serve` (a tiny random model).

Its replies are gibberish: this proves the protocol and the robustness (every failed reply is a
recorded, explained operator failure; the run goes on and ends with exactly its budget).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

TOY = str(Path(__file__).parent / "fixtures" / "tasks" / "toy" / "quadratic")


def test_evo_run_through_a_served_model(llm_server: tuple[str, Path], tmp_path: Path) -> None:
    base_url, _ = llm_server
    config = tmp_path / "run.toml"
    config.write_text(
        "llm_max_tokens = 24\nproposal_concurrency = 4\noperator_selection = \"weights\"\n"
        "[operators]\nconstants = 1.0\nparams = 1.0\nllm_diff = 2.0\nllm_rewrite = 1.0\nllm_crossover = 1.0\n"
    )
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "evo", "run", TOY, "--run-dir", str(run_dir), "--budget", "40",
         "--llm", base_url, "--config", str(config), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with sqlite3.connect(run_dir / "evo.db") as db:
        assert db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 40
        failed = [json.loads(d) for (d,) in db.execute("SELECT data FROM events WHERE kind = 'operator_failed'")]
    llm_failed = [f for f in failed if f["operator"].startswith("llm_")]
    assert len(llm_failed) >= 24, f"only {len(llm_failed)} LLM calls failed/recorded"
    # llm_crossover is chosen only for two different parents, which a toy archive may not offer in 40 evaluations
    assert {"llm_diff", "llm_rewrite"} <= {f["operator"] for f in llm_failed} <= {"llm_diff", "llm_rewrite",
                                                                                   "llm_crossover"}
    for f in llm_failed:
        assert f["reason_kind"] == "operator_error"
        assert f["reason"].startswith(f["operator"] + ": no usable reply")
        assert f["llm"]["completion_tokens"] > 0 and f["llm"]["prompt_tokens"] > 0  # tokens accounted


def test_evo_run_with_the_in_process_transformers_engine(llm_server: tuple[str, Path], tmp_path: Path) -> None:
    _, model_dir = llm_server
    config = tmp_path / "run.toml"
    config.write_text('llm_max_tokens = 16\noperator_selection = "weights"\n'
                      "[operators]\nconstants = 1.0\nllm_diff = 1.0\nllm_rewrite = 1.0\n")
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "evo", "run", TOY, "--run-dir", str(run_dir), "--budget", "20",
         "--llm", f"transformers:{model_dir}", "--config", str(config), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with sqlite3.connect(run_dir / "evo.db") as db:
        assert db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 20
        failed = [json.loads(d) for (d,) in db.execute("SELECT data FROM events WHERE kind = 'operator_failed'")]
    llm_failed = [f for f in failed if f["operator"].startswith("llm_")]
    # constants keep the workers busy while the model loads and generates (it no longer holds every
    # proposal stream), so how many LLM calls fit in the budget depends on the machine's speed.
    assert len(llm_failed) >= 2
    assert all(f["llm"]["completion_tokens"] > 0 for f in llm_failed)
