"""LLM throughput: replies and valid proposals per minute, tokens per second, by concurrency.

Each request is what an `llm_diff` operator sends during a search: the diff prompt of the task
math/circle_packing_26 with its seed program as the parent (`evo.llm.prompts.build_messages`).
A reply counts as a valid proposal when `evo.llm.edits.apply_reply` accepts it (its SEARCH/REPLACE
blocks apply and the child parses). For each concurrency level, `--requests` requests are sent
with at most that many in flight, after `--warmup` untimed requests (model load, warm caches).

With no `--llm`, a tiny random chat model is built in a temporary directory and run in process
(`transformers:PATH`, CPU): a smoke run that works offline anywhere. Its replies are gibberish,
so its valid-proposal rate is 0 and its figures say nothing about a real model.

Against a real vLLM server:

    vllm serve Qwen/Qwen2.5-Coder-7B-Instruct --port 8000
    python benchmarks/llm_throughput.py --llm http://127.0.0.1:8000 --concurrency 1,8,32,64

`--llm` takes anything `evo.llm.engine.make_llm` does: `http://...` (comma-separated
`URL[#model][@weight]`), `transformers:PATH`, `vllm-offline:PATH` (in process) or `vllm:PATH` (evo starts
`vllm serve PATH` for the benchmark and stops it after). Prints a table and writes JSON
(default benchmarks/results/llm_throughput.json) with the git commit and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from evo.errors import EvoError, OperatorError
from evo.llm.edits import apply_reply
from evo.llm.engine import make_llm
from evo.llm.prompts import build_messages
from evo.task import load_task

ROOT = Path(__file__).resolve().parent.parent
TASK = "math/circle_packing_26"


def git_commit() -> str | None:
    """HEAD's commit, read from .git directly (no git process: it may be absent or slow)."""
    git = ROOT / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: PATH"
            git = (ROOT / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        for base in (git, git / "commondir"):
            if base.name == "commondir":  # worktrees keep their refs in the main repository
                if not base.is_file():
                    continue
                base = (git / base.read_text().strip()).resolve()
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """Where the figures were taken: CPU, and the GPU when torch sees one."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


async def run_level(llm: Any, messages: list[dict[str, str]], parent: str, concurrency: int,
                    requests: int, max_tokens: int, temperature: float, seed: int) -> dict[str, Any]:
    """`requests` chat calls with at most `concurrency` in flight; the level's figures."""
    semaphore = asyncio.Semaphore(concurrency)
    rngs = [np.random.default_rng([seed, concurrency, i]) for i in range(requests)]
    latencies: list[float] = []
    totals = {"replies": 0, "valid": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0}
    reasons: dict[str, int] = {}

    async def one(rng: np.random.Generator) -> None:
        async with semaphore:
            try:
                completion = await llm.chat(messages, n=1, max_tokens=max_tokens, temperature=temperature, rng=rng)
            except EvoError as exc:  # a server down mid-run: counted, not fatal
                totals["failed"] += 1
                reasons[type(exc).__name__] = reasons.get(type(exc).__name__, 0) + 1
                return
        latencies.append(completion.seconds)
        totals["prompt_tokens"] += completion.prompt_tokens
        totals["completion_tokens"] += completion.completion_tokens
        for text in completion.texts:
            totals["replies"] += 1
            try:
                apply_reply(parent, text, "diff")
            except OperatorError as exc:
                # The reason's first words ("the reply is empty", "no SEARCH ...") group the failures.
                key = " ".join(str(exc).split()[:4])
                reasons[key] = reasons.get(key, 0) + 1
            else:
                totals["valid"] += 1

    start = time.perf_counter()
    await asyncio.gather(*(one(rng) for rng in rngs))
    seconds = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": requests,
        "seconds": seconds,
        **totals,
        "replies_per_min": totals["replies"] / seconds * 60,
        "valid_per_min": totals["valid"] / seconds * 60,
        "completion_tokens_per_s": totals["completion_tokens"] / seconds,
        "prompt_tokens_per_s": totals["prompt_tokens"] / seconds,
        "latency_p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p95_s": float(np.percentile(latencies, 95)) if latencies else None,
        "failure_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:8]),
    }


def print_table(levels: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="LLM throughput")
    for name in ("concurrency", "requests", "seconds", "replies/min", "valid proposals/min",
                 "completion tok/s", "prompt tok/s", "p50 latency s"):
        table.add_column(name, justify="right")
    for r in levels:
        p50 = r["latency_p50_s"]
        table.add_row(str(r["concurrency"]), str(r["requests"]), f"{r['seconds']:.2f}",
                      f"{r['replies_per_min']:.1f}", f"{r['valid_per_min']:.1f}",
                      f"{r['completion_tokens_per_s']:.1f}", f"{r['prompt_tokens_per_s']:.1f}",
                      f"{p50:.2f}" if p50 is not None else "-")
    console.print(table)


async def bench(args: argparse.Namespace, spec: str, levels: list[int]) -> list[dict[str, Any]]:
    # An HTTP client must allow the highest level in flight; engines take no such argument.
    llm = make_llm(spec, concurrency=max(levels)) if spec.startswith("http") else make_llm(spec)
    task = load_task(TASK)
    parent = task.seeds()[0]
    messages = build_messages("diff", task.prompt(), [parent])
    try:
        # Untimed, at full length (the first two or three generates of a CPU engine are several
        # times slower than the rest): loads the model and warms its kernels and allocator (in-process
        # engines) or resolves the model name and fills the prefix cache (servers), so the first
        # level is not charged for what every level shares.
        for i in range(args.warmup):
            await llm.chat(messages, n=1, max_tokens=args.max_tokens, temperature=args.temperature,
                           rng=np.random.default_rng([args.seed, 0, i]))  # level 0: none real
        return [await run_level(llm, messages, parent.text, c, args.requests, args.max_tokens,
                                args.temperature, args.seed) for c in levels]
    finally:
        await llm.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llm", default=None,
                        help="what make_llm accepts; default: a tiny random model built here, in process")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)")
    parser.add_argument("--requests", type=int, default=8, help="requests per level (default 8)")
    parser.add_argument("--max-tokens", type=int, default=256, help="max completion tokens a request")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests first (default 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "llm_throughput.json")
    args = parser.parse_args(argv)
    try:
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--concurrency must be comma-separated integers, not {args.concurrency!r}")
    if not levels or min(levels) < 1 or args.requests < 1 or args.max_tokens < 1:
        parser.error("--concurrency levels, --requests and --max-tokens must be >= 1")

    console = Console(width=max(140, Console().width))  # the table's 8 columns, unabridged
    with tempfile.TemporaryDirectory(prefix="evo-llm-bench-") as tmp:
        spec = args.llm
        if spec is None:
            sys.path.insert(0, str(ROOT / "tests"))  # llm_fixtures lives with the tests
            from llm_fixtures import build_tiny_model

            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            spec = f"transformers:{build_tiny_model(Path(tmp) / 'tiny-chat-model')}"
            console.print(f"No --llm: a tiny random model in process ({spec}); its replies are gibberish.")
        try:
            results = asyncio.run(bench(args, spec, levels))
        except EvoError as exc:
            console.print(f"[red]error:[/red] {exc}")
            return 1
    print_table(results, console)
    record = {
        "benchmark": "llm_throughput",
        "llm": args.llm or "transformers:<tiny random model>",
        "task": TASK,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "levels": results,
        "git_commit": git_commit(),
        "machine": machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
