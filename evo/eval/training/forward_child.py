"""The forward process: the candidate's model, rebuilt from the returned weights, answering one batch at a time.

Run as `python -P -m evo.eval.training.forward_child` in a fresh work dir holding only `candidate.py` and
`job.json`, by the trusted scorer (`scorer.py`). After the harness's setup (`childside.setup`) it receives
the weights as raw tensors, builds `build_model(info)` (the candidate's architecture), loads them strictly,
and puts the model in eval mode on the device. Then it serves requests:

    {"op": "forward"} + int64 tokens [B, T]  ->  the model's output, as a raw tensor (whatever it returned)
    {"op": "state"}                          ->  the model's state_dict as raw tensors
    {"op": "bye"}                            ->  exit

It never sees a target, a loss or more validation text than the batch it is asked about; the scorer
computes the loss from what comes back and checks every answer's type and shape.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from evo.eval import wire
from evo.eval.training import childside
from evo.eval.training.trainer_child import state_of
from evo.program import MAIN_FILE
from evo.task import load_module


@dataclass(frozen=True)
class ModelInfo:
    """What `build_model` is given: the vocabulary, the scoring context, the device."""

    vocab_size: int
    seq_len: int
    device: str


def main() -> int:
    sock, job = childside.setup()
    spec = job["spec"]
    device = spec["device"]
    header, payload = wire.recv(sock, max_payload=int(spec["max_weight_mb"]) << 20)
    tensors = wire.unpack_tensors(header["meta"], payload, "cpu")
    weights = dict(zip(header["names"], tensors, strict=True))
    sys.path.insert(0, os.getcwd())
    module = load_module(Path(MAIN_FILE), "train")
    sys.modules["train"] = module
    model = module.build_model(ModelInfo(job["vocab_size"], spec["seq_len"], device))
    own = {k.replace("_orig_mod.", ""): k for k in model.state_dict()}
    model.load_state_dict({own.get(k, k): v for k, v in weights.items()}, strict=True)
    model.to(device).eval()
    wire.send(sock, {"op": "ready"})
    with torch.no_grad():
        while True:
            header, payload = wire.recv(sock, max_payload=64 << 20)
            op = header.get("op")
            if op == "forward":
                (idx,) = wire.unpack_tensors(header["meta"], payload, device)
                out = model(idx)
                meta, views = wire.pack_tensors([out])
                wire.send(sock, {"op": "logits", "meta": meta}, views)
            elif op == "state":
                state = state_of(model)
                names = list(state)
                meta, views = wire.pack_tensors([state[n] for n in names])
                wire.send(sock, {"op": "state", "names": names, "meta": meta}, views)
            else:
                os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
