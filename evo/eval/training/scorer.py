"""The trusted scorer: validation bits per byte of a returned model, computed here from its logits.

Run as `python -m evo.eval.training.scorer DIR` by the harness, a fresh interpreter that never imports a
candidate and that no process of the candidate's may read (non-dumpable). `DIR` is the harness's trusted
folder: `score.json` (the spec, the task's data, the candidate's files), `weights.json` + `weights.bin` (the
weights as they arrived from the training process). It writes `result.json` there.

Only this process holds the validation tokens. The candidate's model runs in a sandboxed forward process
(`forward_child.py`) that is sent one batch of input windows at a time and answers with its output; this
process checks the answer's type and shape, casts it to fp32, and computes the cross-entropy against the
targets it alone holds, and the bytes of each target token from the manifest's `token_byte_lengths`:

    bpb = sum over targets of CE_nats(t) / (ln 2 * sum over targets of bytes(y_t))   (targets of 0 bytes left out)

In the same forward process, at a batch drawn here, the causality probe runs on spliced real windows of the
scoring shape (`dynamic:causality`). After the pass the model's state must be the returned weights, exactly
(`dynamic:model_unchanged`), and a sample of windows, scored again in a fresh forward process, in another
order and in other batches, must give the same logits: a model that learns from what it is shown while it
is scored, or carries anything from one batch to the next, shows there.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evo.audit.causality import causality_probe
from evo.data.shards import load_manifest
from evo.eval import wire
from evo.eval.training.launch import ChildFailed, remove, start_child
from evo.eval.training.spec import TrainingSpec


class Refused(Exception):
    """The model's answers end the scoring with a failed check."""

    def __init__(self, check: str, reason: str):
        super().__init__(f"{check}: {reason}")
        self.check, self.reason = check, reason


class Forward:
    """One sandboxed forward process holding the candidate's model."""

    def __init__(self, spec: TrainingSpec, job: dict[str, Any], folder: Path, name: str,
                 weights: tuple[dict[str, Any], bytearray]):
        self.spec, self.vocab = spec, int(job["vocab_size"])
        self.workdir = folder.parent / f"{folder.name}-{name}"
        try:  # the sandbox's deadline is a backstop: the scorer's own timeout (the harness's) ends it sooner
            self.link, self.guards = start_child("forward_child", spec, job, self.workdir, spec.startup_s + 3600)
        except ChildFailed as e:
            raise Refused("dynamic:harness_loss", f"the forward process failed to start: {e}") from e
        header, payload = weights
        wire.send(self.link.sock, {"op": "load", "names": header["names"], "meta": header["meta"]}, [memoryview(payload)])
        self.ask_timeout = max(60.0, spec.budget_s)
        reply, _ = self._recv(0, "loading the weights into build_model(info)")
        if reply.get("op") != "ready":
            raise Refused("dynamic:harness_loss", f"the forward process answered {reply.get('op')!r} to the weights")

    def _recv(self, max_payload: int, what: str) -> tuple[dict[str, Any], bytearray | None]:
        self.link.sock.settimeout(self.ask_timeout)
        try:
            return wire.recv(self.link.sock, max_payload)
        except (wire.WireError, OSError) as e:
            self.link.close()
            raise Refused("dynamic:harness_loss", f"the forward process failed while {what}: "
                          f"{self.link.why_gone('') if isinstance(e, wire.HungUp) else e}") from e

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for `x` [B, T] as fp32 [B, T, V] on the CPU, checked here."""
        meta, views = wire.pack_tensors([x])
        wire.send(self.link.sock, {"op": "forward", "meta": meta}, views)
        b, t = x.shape
        reply, payload = self._recv(b * t * max(self.vocab, 1) * 8 * 2, "computing logits")
        try:
            (out,) = wire.unpack_tensors(reply.get("meta"), payload, "cpu")
        except (wire.WireError, ValueError) as e:
            raise Refused("dynamic:harness_loss", f"the model's forward returned something unreadable: {e}") from e
        if not isinstance(out, torch.Tensor):
            raise Refused("dynamic:harness_loss", f"the model's forward returned {out}, not a logits tensor: the "
                          "harness computes the loss itself from logits [B, T, V]")
        if out.dim() != 3 or tuple(out.shape[:2]) != (b, t) or out.shape[2] < self.vocab or not out.is_floating_point():
            raise Refused("dynamic:harness_loss", f"the model's forward returned a {out.dtype} tensor of shape "
                          f"{tuple(out.shape)} for tokens of shape {(b, t)}; expected logits [B, T, V >= {self.vocab}]")
        out = out[..., : self.vocab].float()
        if not torch.isfinite(out).all():
            raise Refused("dynamic:harness_loss", "the model's logits are not all finite")
        return out

    def state(self) -> tuple[list[str], list[Any], str]:
        """The model's state as the forward process reports it: names, tensors, and a digest of it all."""
        wire.send(self.link.sock, {"op": "state"})
        reply, payload = self._recv(int(self.spec.max_weight_mb) << 20, "sending its state")
        try:
            tensors = wire.unpack_tensors(reply.get("meta"), payload, "cpu")
        except (wire.WireError, ValueError) as e:
            raise Refused("dynamic:model_unchanged", f"the forward process sent an unreadable state: {e}") from e
        names = [str(n) for n in reply.get("names", [])]
        digest = hashlib.sha256(json.dumps([names, reply.get("meta")]).encode() + bytes(payload or b"")).hexdigest()
        return names, tensors, digest

    def close(self) -> None:
        try:
            wire.send(self.link.sock, {"op": "bye"})
        except OSError:
            pass
        self.link.close()
        remove(self.workdir)


def _same(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """Whether two windows' logits agree within `rtol` of the largest (per window): kernels that order their
    sums differently for another batch may differ by rounding, a model that learned cannot hide in that."""
    scale = b.abs().amax(dim=(1, 2)).clamp(min=1.0)
    return bool(((a - b).abs().amax(dim=(1, 2)) <= rtol * scale).all())


def _windows(spec: TrainingSpec, data: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The validation windows (inputs, targets), whole batches only, and the bytes of each token id."""
    manifest = load_manifest(Path(data))
    t, b = spec.seq_len, spec.eval_batch
    val = manifest.tokens("val")
    n = min(spec.eval_tokens, len(val) - 1) // t // b * b
    if n < b:
        raise ValueError(f"the validation split has {len(val)} tokens: too few for one batch of {b} x {t}")
    rows = torch.from_numpy(val[: n * t + 1].astype(np.int64))
    x = rows[:-1].view(n, t)
    y = rows[1:].view(n, t)
    return x, y, manifest.token_byte_lengths().astype(np.int64)


def score(folder: Path) -> dict[str, Any]:
    """Score the weights in `folder` (see the module doc); the result as a dict for `result.json`."""
    job = json.loads((folder / "score.json").read_text())
    spec = TrainingSpec.from_dict(job["spec"])
    header = json.loads((folder / "weights.json").read_text())
    payload = bytearray((folder / "weights.bin").read_bytes())
    checks: list[tuple[str, bool, str]] = []
    x, y, lengths = _windows(spec, spec.data)
    byte_len = torch.from_numpy(lengths)
    b = spec.eval_batch
    batches = x.shape[0] // b
    rng = random.SystemRandom()  # drawn here, unknown to the candidate: where the probe and the re-score fall
    probe_at = rng.randrange(1, batches) if batches > 1 else 0
    sample = sorted(rng.sample(range(x.shape[0]), min(spec.rescore_batches * b, x.shape[0]) // b * b))
    kept: dict[int, torch.Tensor] = {}  # logits of the windows scored again in a fresh process
    kept_all: dict[int, torch.Tensor] = {}  # logits of the batches before the probe (one is shown again)
    nats = torch.zeros((), dtype=torch.float64)
    nbytes = 0
    try:
        model = Forward(spec, job, folder, "forward", (header, payload))
        checks += model.guards
        try:
            names, tensors, before = model.state()
            given = wire.unpack_tensors(header["meta"], payload, "cpu")
            if names != header["names"] or not all(
                    isinstance(t, torch.Tensor) and isinstance(g, torch.Tensor) and g.shape == t.shape
                    and torch.equal(g.to(t.dtype), t) for g, t in zip(given, tensors, strict=True)):
                raise Refused("dynamic:model_unchanged", "the model that build_model(info) built and loaded holds "
                              "other tensors than the weights train() returned")
            del given, tensors
            for i in range(batches):
                if i == probe_at:
                    if i > 0:  # a batch shown before, shown again: a model that carries state answers otherwise
                        j = rng.randrange(i)
                        again_first = model.logits(x[j * b:(j + 1) * b])
                        first = torch.stack([kept_all[k] for k in range(j * b, (j + 1) * b)])
                        if not _same(again_first, first, spec.rescore_rtol):
                            raise Refused("dynamic:model_unchanged", "a batch shown again in the same forward process "
                                          "gave other logits: the model changes with what it is shown")
                    reason = causality_probe(model.logits, job["vocab_size"], spec.seq_len, trials=spec.probe_trials,
                                             batch=b, seed=rng.randrange(1 << 30), rtol=1e-4, windows=x)
                    checks.append(("dynamic:causality", reason is None, reason or ""))
                logits = model.logits(x[i * b:(i + 1) * b])
                tgt = y[i * b:(i + 1) * b]
                ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
                w = byte_len[tgt.reshape(-1)]
                nats += (ce.double() * (w > 0)).sum()
                nbytes += int(w.sum())
                for j in range(i * b, (i + 1) * b):
                    if j in sample:
                        kept[j] = logits[j - i * b].clone()
                    if i < probe_at:
                        kept_all[j] = logits[j - i * b].clone()
            if model.state()[2] != before:
                raise Refused("dynamic:model_unchanged", "the model's parameters or buffers changed while it was scored")
        finally:
            model.close()
        again = Forward(spec, job, folder, "rescore", (header, payload))
        try:
            order = list(kept)
            rng.shuffle(order)
            for k in range(0, len(order), b):
                idx = order[k:k + b]
                out = again.logits(x[idx])
                if not _same(out, torch.stack([kept[j] for j in idx]), spec.rescore_rtol):
                    raise Refused("dynamic:model_unchanged", "windows scored again in a fresh forward process, in "
                                  "another order, gave other logits: the model changes with what it is shown while "
                                  "it is scored")
        finally:
            again.close()
        checks.append(("dynamic:model_unchanged", True, ""))
        checks.append(("dynamic:harness_loss", True, ""))
    except Refused as e:
        checks.append((e.check, False, e.reason))
        return {"ok": False, "failure": "audit" if e.check != "dynamic:harness_loss" else "invalid",
                "error": f"{e.check}: {e.reason}", "checks": checks}
    bpb = float(nats) / (math.log(2) * max(nbytes, 1))
    tokens = int(y.numel())
    return {"ok": True, "val_bpb": bpb, "val_loss": float(nats) / tokens, "val_tokens": tokens, "val_bytes": nbytes,
            "checks": checks}


def main(argv: list[str]) -> int:
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no process of ours reads this one's memory
        # Started in a session of its own (a Ctrl-C at the terminal is the engine's to handle: it lets the
        # evaluations in hand finish), so it goes when the process that started it goes instead.
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(os.environ.get("EVO_SCORER_PARENT", os.getppid())):
        return 1  # the parent died before the line above
    folder = Path(argv[1])
    result = score(folder)
    (folder / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
