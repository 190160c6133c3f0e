"""Timing on a GPU: the events that time a replayed graph are recorded inside it (they skip without a GPU)."""

from __future__ import annotations

import pytest
import torch

from evo.eval.timing import L2Flusher, Replay, graph_events_work, timed_replay

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@needs_gpu
def test_a_replayed_graph_is_timed_by_events_inside_it() -> None:
    """With events inside the graph, the time is the call's own, and its outputs are the call's."""
    assert graph_events_work(), "this torch cannot record timing events in a graph (torch >= 2.8 can)"
    x = torch.randn(1 << 22, device="cuda")
    replay = Replay.capture(lambda a: a * 2 + 1, (x,), "cuda")
    assert replay.events is not None
    replay.load((x,))
    s = timed_replay(replay, None, L2Flusher("cuda", 50 << 20), 0.0)
    assert 0.0 < s.time_s < 0.1
    assert torch.equal(s.out[0], x * 2 + 1)


@needs_gpu
def test_work_after_the_graph_is_not_in_its_time() -> None:
    """Events inside the graph time the call only: a long kernel launched after the replay is not counted."""
    x = torch.randn(1 << 20, device="cuda")
    replay = Replay.capture(lambda a: a + 1, (x,), "cuda")
    assert replay.events is not None
    replay.graph.replay()
    torch.cuda._sleep(50_000_000)  # tens of milliseconds of GPU time, after the graph's end event
    torch.cuda.synchronize()
    start, end = replay.events
    assert start.elapsed_time(end) < 5.0  # milliseconds: the sleep is not inside


@needs_gpu
def test_the_whole_timed_call_as_one_graph_unmasks_times_and_digests() -> None:
    """`GraphedCalls`: each replay unmasks its set under the key given with the call (into the graph's inputs),
    times the call by its own events, and digests the outputs as `digest` does on the same outputs; the outputs
    are the call's on that set. Two keys for one set: the wrong one gives other inputs."""
    from evo.eval import digest as digests
    from evo.eval import masked as masking
    from evo.eval.timed_graph import GraphedCalls

    g = torch.Generator().manual_seed(0)
    sets = [(torch.randn(4096, 96, generator=g), torch.randn(96, generator=g), 1e-5) for _ in range(3)]
    keys = [11, 2**62 + 5, 123456789]
    masked = [masking.on_device(masking.mask(s, k, "cuda"), "cuda") for s, k in zip(sets, keys, strict=True)]

    def call(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    like = tuple(x.cuda() if isinstance(x, torch.Tensor) else x for x in sets[0])
    graphed = GraphedCalls(call, like, masked, 2024, L2Flusher("cuda", 50 << 20), "cuda")
    for i in range(5):
        k = i % 3
        t, digest, out = graphed(i, keys[k])
        expected = call(*(x.cuda() if isinstance(x, torch.Tensor) else x for x in sets[k]))
        assert 0.0 < t < 0.1
        assert torch.allclose(out[0], expected, rtol=1e-5, atol=1e-6), i
        assert digest == digests.digest(out, 2024), i
    _, _, wrong = graphed(0, keys[1])
    assert not torch.allclose(wrong[0], call(*(x.cuda() if isinstance(x, torch.Tensor) else x for x in sets[0])))
