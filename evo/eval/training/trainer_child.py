"""The training process: the candidate's `train(data, budget)` in the sandbox, its model sent back as data.

Run as `python -P -m evo.eval.training.trainer_child` in a fresh work dir holding `train.py`, `job.json` and
copies of the training shards (`data/`). After the harness's setup (`childside.setup`: the guards and their
report) it builds the candidate's view of the data and the budget, imports `train.py`, calls
`train(data, budget)` and sends the returned model's `state_dict` as raw tensors (no pickle) with what the
data object counted, then waits to be told to exit. The harness measures the time from outside, takes the
weights as they arrive, and watches this process from /proc; nothing this file says after the candidate
ran is believed without a check (the tensors are parsed as data, the counts are recorded as reported).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evo.data.shards import read_shard
from evo.eval import wire
from evo.eval.training import childside
from evo.program import MAIN_FILE
from evo.task import load_module

COMPILED_PREFIX = "_orig_mod."  # what torch.compile puts before every name of a compiled module's state


class TrainData:
    """The training tokens, as the candidate sees them. `batch` hands out random windows and counts them;
    `tokens` (the whole array) is there too, but what a candidate reads from it is not counted."""

    def __init__(self, tokens: np.ndarray, vocab_size: int, seq_len: int, device: str, seed: int):
        self.vocab_size, self.seq_len, self.device = vocab_size, seq_len, device
        self._tokens = tokens
        self._gen = torch.Generator().manual_seed(seed)
        self.tokens_handed_out = 0
        self.raw_access = False

    @property
    def tokens(self) -> np.ndarray:
        """All training tokens (uint16). Reading them directly makes the tokens-seen count a lower bound."""
        self.raw_access = True
        return self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def batch(self, batch_size: int, seq_len: int | None = None,
              device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: inputs `x[B, T]` and next-token targets `y[B, T]` (int64, on `device`)."""
        t = seq_len or self.seq_len
        starts = torch.randint(0, len(self._tokens) - t - 1, (batch_size,), generator=self._gen).tolist()
        rows = np.stack([self._tokens[s:s + t + 1] for s in starts]).astype(np.int64)
        both = torch.from_numpy(rows)
        self.tokens_handed_out += batch_size * t
        dev = device or self.device
        return both[:, :-1].contiguous().to(dev), both[:, 1:].contiguous().to(dev)


class Budget:
    """The wall-clock budget. `deadline` is on `time.monotonic()`'s clock and was set by the harness when it
    started this process: start-up and compilation are inside it. The harness keeps its own clock."""

    def __init__(self, seconds: float, deadline: float, device: str):
        self.seconds, self.deadline, self.device = seconds, deadline, device

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def state_of(model: Any) -> dict[str, torch.Tensor]:
    """The model's `state_dict`, names without torch.compile's prefix."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train() returned {type(model).__name__}, not a torch.nn.Module")
    out = {}
    for name, t in model.state_dict().items():
        out[name.replace(COMPILED_PREFIX, "")] = t
    return out


def main() -> int:
    sock, job = childside.setup()
    spec = job["spec"]
    shards = [read_shard(Path(p)) for p in job["train_shards"]]
    tokens = np.concatenate([np.asarray(s) for s in shards]) if len(shards) > 1 else np.asarray(shards[0])
    data = TrainData(tokens, job["vocab_size"], spec["seq_len"], spec["device"], spec["seed"])
    budget = Budget(spec["budget_s"], job["deadline"], spec["device"])
    torch.manual_seed(spec["seed"])
    sys.path.insert(0, os.getcwd())
    module = load_module(Path(MAIN_FILE), "train")
    sys.modules["train"] = module
    model = module.train(data, budget)
    state = state_of(model)
    names = list(state)
    meta, views = wire.pack_tensors([state[n] for n in names])
    params = sum(p.numel() for p in model.parameters()) if isinstance(model, torch.nn.Module) else 0
    wire.send(sock, {"op": "weights", "names": names, "meta": meta, "params": params,
                     "tokens_handed_out": data.tokens_handed_out, "raw_access": data.raw_access}, views)
    wire.recv(sock)  # "bye": the harness has watched this process go quiet
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
