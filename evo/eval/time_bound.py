"""The judge's arithmetic of timed calls: how many a workload gets, which are rechecked, and what the judge's
clock for each says of the time the child reported (`TimeBound`). Pure functions of numbers, used by
`evo/eval/judge.py`; kept apart so that the bound can be read, and tested, on its own."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from evo.eval.timing import BenchConfig

# The slack's floor and its share of the reported median (see `time_bound`): on a GPU the no-op's own spread
# usually sets it; Triton's interpreter on a CPU jitters by milliseconds.
SLACK = {"cuda": (50e-6, 1.0), "cpu": (5e-3, 0.5)}  # (at least, times the reported median)


@dataclass
class TimeBound:
    """What the judge's clock says of one workload's timed calls."""

    claimed_s: float  # median of the reported event times
    judged_s: float  # median over calls of max(reported, clock - the no-op's 90th-percentile gap): the score's
    gap_s: float  # median over calls of (the judge's clock for the call) - (its reported time)
    gap_high_s: float  # the trusted no-op's gap at its 90th percentile
    slack_s: float  # how far past gap_high the median gap may go before it is a lie rather than noise
    clock_limited: int = 0  # calls whose time is the clock's (their reported time was shorter)

    @property
    def verdict(self) -> str | None:
        if self.gap_s > self.gap_high_s + 2 * self.slack_s:
            return (f"reported {self.claimed_s * 1e6:.2f} us per call, but the judge's clock saw "
                    f"{(self.gap_s - self.gap_high_s) * 1e6:.2f} us more per call than the harness's own overhead "
                    f"allows (twice the slack of {self.slack_s * 1e6:.2f} us): work was done outside the timed events, or the "
                    "times were forged")
        if self.gap_s < 0:
            # No noise can do this; a time reported too long only costs the candidate its score, so nothing
            # nearer the no-op's gap than this is refused (a quiet moment after a busy calibration is not a lie).
            return (f"reported {self.claimed_s * 1e6:.2f} us per call, more than the judge's clock saw from its "
                    "request to its answer: the times were forged")
        return None

    def to_dict(self) -> dict[str, float]:
        return {"claimed_s": self.claimed_s, "judged_s": self.judged_s, "gap_s": self.gap_s,
                "gap_high_s": self.gap_high_s, "slack_s": self.slack_s, "clock_limited": self.clock_limited}


def time_bound(claimed: list[float], clock: list[float], calibration: dict[str, Any], device: str) -> TimeBound:
    """What each timed call may be believed to have taken, and whether the reports are lies.

    A call's time is its reported event time, but never less than the judge's clock for it less the trusted
    no-op's 90th-percentile overhead and the slack: work outside the timed events (a hidden stream, outputs put
    right late) beyond the slack counts in the time, and noise within it leaves the events' time as it is
    (noise only ever makes a call slower, never a verdict). The score is the median of these times. The
    slack is at least 50 us on a GPU, the median reported time, and 4 times the no-op's 10th-to-90th spread:
    the bound's resolution, which the no-op's own noise sets (on the H100, 0.3 to 1 ms a call: BENCHMARKS.md).

    Refused: a median gap past the no-op's 90th percentile by more than twice the slack (beyond any noise
    seen on honest kernels, the reports are lies), and a negative median gap (a call longer than the clock
    saw), which no noise makes. Call by call, so that host time inside a call is in both the clock and the
    event time and cancels."""
    high = float(calibration.get("overhead_high_s", calibration["overhead_s"]))
    low = float(calibration.get("overhead_low_s", calibration["overhead_s"]))
    a, r = SLACK["cuda" if device.startswith("cuda") else "cpu"]
    med = statistics.median(claimed)
    gap = statistics.median(c - t for c, t in zip(clock, claimed, strict=True))
    slack = max(a, r * med, 4 * (high - low))
    judged = [max(t, c - high - slack) for c, t in zip(clock, claimed, strict=True)]
    limited = sum(1 for j, t in zip(judged, claimed, strict=True) if j > t)
    return TimeBound(med, statistics.median(judged), gap, high, slack, limited)


def timed_calls(config: BenchConfig) -> int:
    """Timed calls per workload: at most 2 x input_sets - 1, so that calls on an input set seen before (in this
    timing: the sets are unseen before it) are fewer than half, and the median is a call that computed. A
    candidate that answers repeats from a cache gains nothing. Timed once: a second timing of the same sets
    would be all repeats (a first one that failed its bound on purpose, then a cached one)."""
    return max(1, min(config.iters, 2 * config.input_sets - 1))


def rechecked_calls(n: int, sets: int) -> list[int]:
    """The timed calls whose outputs are fetched after the timing and compared: every first sight of an input set
    (call i uses set i % sets). Repeats are fewer than half of the `n` calls (`timed_calls`), so the median lies
    between the fastest and the slowest of the first sights, every one of them right: a candidate that answers
    any first sight wrong, or puts it right after its digest, is refused for certain, not by the luck of a draw
    (two calls drawn of seven let four wrong answers of seven through one time in seven)."""
    return list(range(min(n, sets)))
