"""The judge: the trusted side of the kernel harness, which never runs candidate code; here, its judgement
of one child.

The judge runs as its own processes (`evo/eval/judge_process.py`: a lead the worker starts, and helpers the
lead starts), each from a fresh interpreter (never forked from a process that held a candidate) and marked
non-dumpable, so that a candidate's process of the same user can neither read its memory nor trace it. The
worker hands the lead, for every child it forks, the judge's end of a socket pair to that child; a judge then
drives the child (`evo/eval/bench.py`'s `Runner`) and reports what it decided on the control socket.

What it decides, and why the candidate cannot forge it:

- correctness: the expected outputs (the reference job's files, read here and deleted) exist only in this
  process. Every checked call's outputs come here as data and are compared here (`compare_outputs`):
  fresh inputs on every workload, hidden ones included, in an order drawn here, the stress round, repeated
  calls, and every timed call that first saw an input set, after the timing (`rechecked_calls`);
- inputs of the timing: the seeds of its sets and the keys that mask them (`evo/eval/masked.py`) are drawn
  here and told only to the reference job; a set's key goes with each timed call that uses it, so no
  candidate's process holds a timing input before that call's clock runs (no answer made ahead);
- time: for every timed call the judge's own clock runs from the request to the answer (as the kernel stamped
  the answer's packet: `wire.timed_exchange`), which carries the call's event time and a digest of its
  outputs under a key drawn here. A reference child (trusted code) answered the same requests with a no-op
  earlier (`calibrate`): the clock's overhead per call beyond the reported time (the gap), as percentiles.
  A call's time is never less than its clock less the no-op's 90th percentile and a slack (`evo/eval/time_bound.py`):
  work outside the timed events (hidden streams, outputs put right late) past the slack counts in the time,
  and a median gap past twice the slack, or a negative one (a call longer than the clock saw), is refused.
  The outputs of every timed call that first saw an input set are fetched after the timing and must match
  both their digest and the expected values;
- evidence: what only the child can see (threads, flags, harness functions, files, stream) must be reported,
  well formed, for every check; a missing report fails that check.
"""

from __future__ import annotations

import inspect
import random
import socket
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from evo.eval import wire
from evo.eval.digest import digest as output_digest
from evo.eval.integrity import CORRECTNESS_CHECKS, classify_mismatch
from evo.eval.kernel_spec import Workload, compare_outputs, stress_description, stress_inputs
from evo.eval.reference_data import WorkloadData, draw_timing_plan
from evo.eval.time_bound import rechecked_calls, time_bound, timed_calls
from evo.eval.timing import BenchConfig, spread_of
from evo.task import load_module

EVIDENCE = ("dynamic:timer_integrity", "dynamic:global_flags", "dynamic:thread_count", "dynamic:files_left",
            "dynamic:stream_join")
SAMPLE_STRIDE = 997  # every 997th element of an output, kept to tell two outputs apart (fresh_inputs)


@dataclass
class Expected:
    """A task's expected outputs in one session, on the judge's device, with what the plan needs."""

    reference: ModuleType
    data: WorkloadData  # seeds and workloads only: the judge holds no inputs
    outputs: dict[tuple[str, int, bool], list[torch.Tensor]] = field(default_factory=dict)

    def of(self, w: str, seed: int, stressed: bool = False) -> list[torch.Tensor]:
        return self.outputs[(w, seed, stressed)]


def plan_task(task_root: Path, session_seed: int, device: str, config: BenchConfig,
              plan: dict[str, list[list[int]]] | None = None) -> Expected:
    """A task's workloads and seeds, and a fresh timing plan (or the lead judge's `plan`, in a helper); no
    expected output yet (`load_expected`)."""
    reference = load_module(task_root / "reference.py", f"evo_reference_judge_{abs(hash((str(task_root), session_seed)))}")
    data = WorkloadData(reference, device, session_seed, config, with_inputs=False)
    # The timing's seeds and mask keys, drawn here: secret from every candidate's process.
    data.timing_plan = draw_timing_plan(data.workloads, config, data.seeds) if plan is None else \
        {w: [(int(seed), int(key)) for seed, key in sets] for w, sets in plan.items()}
    return Expected(reference, data)


def load_expected(exp: Expected, device: str, out_dir: Path) -> Expected:
    """Read the reference job's files onto `device` (the lead judge deletes them once every judge has). Without
    the GPU lock: the reference child holds it alone meanwhile, waiting for the judge (`judge_process._reference`)."""
    for w, seed, stressed, path in exp.data.expected_files(out_dir):
        exp.outputs[(w, seed, stressed)] = [t.to(device) for t in torch.load(path, weights_only=True)]
    return exp


def delete_expected(exp: Expected, out_dir: Path) -> None:
    for *_, path in exp.data.expected_files(out_dir):
        path.unlink(missing_ok=True)


class Refused(Exception):
    """The child's answer ends the judgement with a failed check."""

    def __init__(self, check: str, reason: str):
        super().__init__(f"{check}: {reason}")
        self.check, self.reason = check, reason


class Session:
    """One child, driven over its socket."""

    def __init__(self, sock: socket.socket, clock: socket.socket, device: str,
                 on_gpu: Callable[[], AbstractContextManager[Any]] = nullcontext):
        self.sock, self.device = sock, device
        self.clock = clock  # the timed calls' packets (`wire.clock_pair`)
        # The GPU held shared with checkers, never during another child's timing: every GPU operation of the
        # judge runs inside (its copies and kernels beside a timed call were in that call's time, and its gap).
        self.on_gpu = on_gpu
        self.inbox = wire.Buffer(pinned=device.startswith("cuda"))  # outputs of hundreds of MB, every check
        self.seconds: dict[str, float] = {}
        self.send_windows: list[float] = []  # per timed call: the send's own seconds, a lost turn of the GIL in it

    def ask(self, header: dict[str, Any], max_payload: int = 0) -> tuple[dict[str, Any], bytearray | None]:
        wire.send(self.sock, header)
        reply, payload = wire.recv(self.sock, max_payload, self.inbox if max_payload else None)
        if reply.get("ok") is not True:
            raise Refused("runs", f"{header.get('op')} {header.get('w', '')}: {str(reply.get('error'))[:400]}")
        return reply, payload

    def timed(self, header: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """One timed call over the clock socket: the answer, and the seconds from the request to the answer."""
        reply, seconds, window = wire.timed_exchange(self.clock, header)
        self.send_windows.append(window)
        if reply.get("ok") is not True:
            raise Refused("runs", f"{header.get('op')}: {str(reply.get('error'))[:400]}")
        return reply, seconds

    def compare(self, meta: Any, payload: bytearray | memoryview | None, expected: list[torch.Tensor], atol: float,
                rtol: float, digest_key: int | None = None) -> tuple[str | None, list[Any], int | None]:
        """The outputs a child sent, rebuilt on the device and compared with `expected`; with `digest_key`, also
        their digest under that key (`evo/eval/digest.py`)."""
        t0 = time.perf_counter()
        with self.on_gpu():
            t1 = time.perf_counter()
            got = wire.unpack_tensors(meta, payload, self.device)
            t2 = time.perf_counter()
            reason = compare_outputs(tuple(got), tuple(expected), atol, rtol)
            digest = output_digest(got, digest_key) if digest_key is not None else None
        # Where a check's time goes on this side (the rest is the child's call and the socket), for the benchmark.
        for key, dt in (("compare_wait", t1 - t0), ("unpack", t2 - t1), ("compare", time.perf_counter() - t2)):
            self.seconds[key] = self.seconds.get(key, 0.0) + dt
        return reason, got, digest


def _max_payload(expected: list[torch.Tensor]) -> int:
    return 2 * sum(t.numel() * t.element_size() for t in expected) + (1 << 20)


def _timed_batch(s: Session, w: Workload, n: int, key: int, mask_keys: list[int]
                 ) -> tuple[list[dict[str, Any]], list[float], dict[str, bool]]:
    """`n` timed calls of one workload: each answer and the judge's clock for it, from the request to the
    kernel's stamp of the answer (`wire.timed_exchange`: neither this thread's wake-up nor its wait for the
    interpreter's lock, while other children's checks are compared here, is in it); and whether the child says
    it replayed a CUDA graph (its word only, for the report).

    Call i uses input set i % sets, whose mask key goes with the request, so the child holds no input of the
    call before its clock starts; its outputs are committed by digest in its answer. Between an answer and the
    next request the child has nothing left to compute for one call and nothing yet for the next, so the
    clock need not run there. The child's word on how it timed (a CUDA graph; events inside it) is reported."""
    setup, _ = s.ask({"op": "time_setup", "w": w.name, "key": key, "calls": n})
    answers, clock = [], []
    s.send_windows.clear()
    for i in range(n):
        reply, seconds = s.timed({"op": "go", "i": i, "key": mask_keys[i % len(mask_keys)]})
        clock.append(seconds)
        answers.append(reply)
    return answers, clock, {"graph": setup.get("graph") is True, "graph_events": setup.get("graph_events") is True,
                            "one_graph": setup.get("one_graph") is True,
                            "send_window_max_s": max(s.send_windows, default=0.0)}


def _floats(answers: list[dict[str, Any]], key: str) -> list[float]:
    vals = [a.get(key) for a in answers]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0 for v in vals):
        raise Refused("dynamic:time_bound", f"a timed call's answer has no valid {key!r}")
    return [float(v) for v in vals]  # type: ignore[arg-type]


def calibrate(s: Session, exp: Expected, config: BenchConfig) -> dict[str, Any]:
    """The clock's overhead per timed call, per workload, against a trusted child answering with a no-op:
    its median and its 10th and 90th percentiles, after a batch that warms the path (digest weights, caches)."""
    out: dict[str, Any] = {}
    n = max(config.iters, timed_calls(config))  # percentiles want more calls than a candidate's timing has
    s.ask({"op": "timing_begin"})
    try:
        for w in exp.data.workloads:
            keys = exp.data.mask_keys(w.name)
            _timed_batch(s, w, max(config.warmup, 3), random.SystemRandom().randrange(2**62), keys)
            s.ask({"op": "keep", "w": w.name, "keep": []})
            answers, clock, _ = _timed_batch(s, w, n, random.SystemRandom().randrange(2**62), keys)
            claimed = _floats(answers, "t")
            # The no-op's own event time is near zero; what it reports is in the overhead too.
            trusted = [c - t for c, t in zip(clock, claimed, strict=True)]
            s.ask({"op": "keep", "w": w.name, "keep": []})
            deciles = statistics.quantiles(trusted, n=10) if len(trusted) > 1 else trusted * 9
            out[w.name] = {"overhead_s": statistics.median(trusted), "overhead_low_s": deciles[0],
                           "overhead_high_s": deciles[-1], "overhead_mean_s": statistics.fmean(trusted),
                           "overhead_spread": spread_of(trusted)}
    finally:
        s.ask({"op": "timing_end"})
    return out


def judge_candidate(s: Session, exp: Expected, config: BenchConfig, prepared: dict[str, Any],
                    workdir: str, timed: bool = True) -> dict[str, Any]:
    """Drive a candidate's child through the checks and the timing; the result the worker reports. Untimed
    (the kernels family's `correctness` rung): the visible workloads checked, nothing timed, then the evidence."""
    checks: list[tuple[str, bool, str]] = []
    result: dict[str, Any] = {"workloads": {}, "checks": checks, "bounds": {}, "guards": {}}
    try:
        _judge(s, exp, config, prepared, workdir, result, timed)
    except Refused as e:
        checks.append((e.check, False, e.reason))
    except wire.HungUp as e:
        checks.append(("runs", False, f"the candidate's process stopped answering: {e}"))
    except wire.WireError as e:
        checks.append(("dynamic:evidence", False, f"the candidate's process broke the protocol: {e}"))
    except OSError as e:
        checks.append(("runs", False, f"the candidate's process stopped answering: {e}"))
    try:
        wire.send(s.sock, {"op": "bye"})
    except OSError:
        pass
    result["seconds"] = s.seconds
    return result


def _judge(s: Session, exp: Expected, config: BenchConfig, prepared: dict[str, Any], workdir: str,
           result: dict[str, Any], timed: bool = True) -> None:
    checks: list[tuple[str, bool, str]] = result["checks"]
    spec = exp.reference.SPEC
    data = exp.data
    rng = random.SystemRandom()
    first, _ = wire.recv(s.sock)  # sent before the candidate was imported: the harness's own words
    result["guards"] = first.get("guards") if isinstance(first.get("guards"), dict) else {}
    hello, _ = wire.recv(s.sock)
    if hello.get("ok") is not True:
        raise Refused("runs", str(hello.get("error", "the candidate did not start"))[:600])
    t0 = time.perf_counter()

    # Correctness, decided here: visible workloads first, then hidden (a failure on hidden shapes alone is
    # told apart), fresh inputs per call in an order drawn here; the stress round; a second, shorter round
    # (a warm-up detector or state kept between calls shows).
    checked = [w for w in data.workloads if timed or not w.hidden]  # untimed: the visible ones
    visible = [(w, sd, False) for w in checked if not w.hidden for sd in data.seeds[w.name]]
    hidden = [(w, sd, False) for w in checked if w.hidden for sd in data.seeds[w.name]]
    order = rng.sample(visible, len(visible)) + rng.sample(hidden, len(hidden))
    stress = [(w, data.stress_seeds[w.name], True) for w in sorted(checked, key=lambda w: w.hidden)
              if w.name in data.stress_seeds]
    rounds = [("fresh", order), ("stress", stress), ("repeat", rng.sample(order, min(len(order), 4)))]
    samples: dict[str, list[torch.Tensor]] = {}
    for kind, calls in rounds:
        for w, seed, stressed in calls:
            expected = exp.of(w.name, seed, stressed)
            poison = sum(e.numel() * e.element_size() for e in expected)
            reply, payload = s.ask({"op": "check", "w": w.name, "seed": seed, "stress": stressed,
                                    "poison_bytes": poison}, _max_payload(expected))
            reason, got, _ = s.compare(reply.get("tensors"), payload, expected, spec.atol, spec.rtol)
            if reason is not None:
                where = f"{'hidden' if w.hidden else 'visible'} workload {w.name} (seed {seed})"
                if kind == "repeat":
                    raise Refused("dynamic:warmup_invariance", f"{where}, on a repeated call: {reason}")
                if kind == "stress":
                    check = classify_mismatch(reason, False)
                    check = check if check == "dynamic:output_type" else "dynamic:precision"
                    raise Refused(check, f"{where}: wrong on {_stress_words(exp, w, seed)}: {reason}")
                raise Refused(classify_mismatch(reason, w.hidden), f"{where}: {reason}")
            # Reported by the child: a lie here gains nothing (the outputs were right, and were compared here).
            if reply.get("mutated") is not False:
                raise Refused("dynamic:input_mutation", f"workload {w.name}: run modified its inputs in place")
            if reply.get("aliased") is not False:
                raise Refused("dynamic:no_alias", f"workload {w.name}: an output shares memory with an input")
            if kind == "fresh" and len(samples.setdefault(w.name, [])) < 2:
                with s.on_gpu():
                    samples[w.name].append(torch.cat([g.reshape(-1)[::SAMPLE_STRIDE].to(torch.float64) for g in got
                                                      if isinstance(g, torch.Tensor) and g.is_floating_point()]
                                                     or [torch.zeros(1, dtype=torch.float64, device=s.device)]))
            del got, payload
    for name, outs in samples.items():  # a constant answer that slipped through a loose tolerance
        with s.on_gpu():
            same = len(outs) == 2 and outs[0].numel() > 1 and torch.equal(outs[0], outs[1])
        if same:
            raise Refused("dynamic:fresh_inputs", f"workload {name}: two different inputs gave identical outputs")
    for name in CORRECTNESS_CHECKS + ("dynamic:warmup_invariance", "dynamic:input_mutation", "dynamic:no_alias",
                                      "dynamic:fresh_inputs"):
        checks.append((name, True, ""))
    s.seconds["checks"] = time.perf_counter() - t0

    escaped_any = _time_and_recheck(s, exp, config, prepared, rng, result) if timed else []

    # Evidence only this process's child can give: every check reported, well formed.
    reply, _ = s.ask({"op": "facts", "workdir": workdir})
    facts = reply.get("facts")
    reported: dict[str, tuple[bool, str]] = {}
    if isinstance(facts, list):
        for f in facts:
            if isinstance(f, list) and len(f) == 3 and isinstance(f[0], str) and isinstance(f[1], bool):
                if f[0] in reported and reported[f[0]][0] != f[1]:
                    raise Refused(f[0], "the candidate's process reported this check both passed and failed")
                reported[f[0]] = (f[1], str(f[2])[:500])
    for name in EVIDENCE:
        ok, reason = reported.get(name, (False, "not reported by the candidate's process (a check that cannot be "
                                         "made counts as failed)"))
        checks.append((name, ok, reason))
    for reason in escaped_any:
        checks.append(("dynamic:stream_join", False, reason))
    child_seconds = reply.get("seconds")
    if isinstance(child_seconds, dict):
        s.seconds.update({f"child_{k}": float(v) for k, v in child_seconds.items() if isinstance(v, (int, float))})


def _time_and_recheck(s: Session, exp: Expected, config: BenchConfig, prepared: dict[str, Any],
                      rng: random.SystemRandom, result: dict[str, Any]) -> list[str]:
    """The timing rung's part: every workload's timed calls under the judge's clock, then the recheck of their
    outputs. Returns what the child said ran outside the timed stream (refused with its evidence)."""
    checks: list[tuple[str, bool, str]] = result["checks"]
    spec = exp.reference.SPEC
    data = exp.data
    # Timing: the GPU held alone; every timed call under the judge's clock, its outputs committed by digest.
    t0 = time.perf_counter()
    s.ask({"op": "stage"})
    n = timed_calls(config)
    calibration = prepared.get("calibration") or {}
    picked: dict[str, list[tuple[int, int, int]]] = {}  # workload -> (call, key, digest)
    escaped_any: list[str] = []
    s.ask({"op": "timing_begin"})
    try:
        for w in data.workloads:
            cal = calibration.get(w.name)
            if not isinstance(cal, dict) or not isinstance(cal.get("overhead_s"), (int, float)):
                raise Refused("dynamic:time_bound", f"workload {w.name}: no calibration of the judge's clock "
                              "(the reference job's); a time that cannot be bounded is not believed")
            key = rng.randrange(2**62)
            answers, clock, how = _timed_batch(s, w, n, key, exp.data.mask_keys(w.name))
            graph = how["graph"]
            claimed = _floats(answers, "t")
            bound = time_bound(claimed, clock, cal, s.device)
            result["bounds"][w.name] = {**bound.to_dict(), "calls": n, **how,
                                        **{k: float(cal[k]) for k in ("overhead_s", "overhead_low_s", "overhead_high_s")
                                           if isinstance(cal.get(k), (int, float))}}
            if bound.verdict is not None:
                raise Refused("dynamic:time_bound", f"workload {w.name}: {bound.verdict}")
            digests = [a.get("digest") for a in answers]
            if not all(isinstance(d, int) and not isinstance(d, bool) for d in digests):
                raise Refused("dynamic:timed_outputs", f"workload {w.name}: a timed call's answer has no digest")
            calls = rechecked_calls(n, len(exp.data.timing_plan[w.name]))
            picked[w.name] = [(i, key, int(digests[i])) for i in calls]  # type: ignore[arg-type]
            s.ask({"op": "keep", "w": w.name, "keep": calls})
            med = bound.claimed_s
            esc = statistics.median(_floats(answers, "escaped"))
            result["bounds"][w.name]["escaped_s"] = esc  # the child's word, kept to tune the threshold below
            if esc > max(20e-6, 0.25 * med):
                escaped_any.append(f"workload {w.name}: {esc * 1e6:.1f} us of work ran outside the timed stream "
                                   "(side stream or deferred work)")
            result["workloads"][w.name] = {"median_s": bound.judged_s, "claimed_s": med, "spread": spread_of(claimed),
                                           "escaped_s": esc, "n": n, "graph": graph,
                                           "clock_limited": bound.clock_limited}
    finally:
        s.ask({"op": "timing_end"})
    s.seconds["timing"] = time.perf_counter() - t0
    checks.append(("dynamic:time_bound", True, ""))

    # The picked timed calls: their outputs as committed inside their timing windows, and right.
    t0 = time.perf_counter()
    for w in data.workloads:
        sets = data.timing_seeds[w.name]
        for i, key, committed in picked.get(w.name, []):
            seed = sets[i % len(sets)]
            expected = exp.of(w.name, seed)
            reply, payload = s.ask({"op": "fetch", "w": w.name, "i": i}, _max_payload(expected))
            reason, _, digest = s.compare(reply.get("tensors"), payload, expected, spec.atol, spec.rtol, key)
            if digest != committed:
                raise Refused("dynamic:timed_outputs", f"workload {w.name}: timed call {i}'s outputs changed after its "
                              "timing window closed (their digest differs from the one committed in it)")
            if reason is not None:
                raise Refused("dynamic:warmup_invariance", f"workload {w.name}: what timed call {i} returned is wrong: "
                              f"{reason}")
    checks.append(("dynamic:timed_outputs", True, ""))
    s.seconds["recheck"] = time.perf_counter() - t0
    return escaped_any


def _stress_words(exp: Expected, w: Workload, seed: int) -> str:
    """How the stress round's inputs look (made here again from the seed: the judge holds no inputs)."""
    try:
        names = tuple(inspect.signature(exp.reference.run).parameters)
        inputs = stress_inputs(exp.reference.SPEC, exp.reference.make_inputs(dict(w.params), seed, "cpu"))
        return stress_description(exp.reference.SPEC, inputs, names)
    except Exception:  # noqa: BLE001 - a description, never a verdict
        return f"inputs scaled by {exp.reference.SPEC.stress.scale:g}"


# -- the process ------------------------------------------------------------------------------------
