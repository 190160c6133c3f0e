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
