"""The judge's bound on reported times (`evo.eval.time_bound.time_bound`), on numbers shaped like an H100's."""

from __future__ import annotations

import random

from evo.eval.time_bound import time_bound

US = 1e-6
# A trusted no-op's gap per call (clock less reported time): 1.3 ms, 10th and 90th percentiles 40 us apart.
CALIBRATION = {"overhead_s": 1300 * US, "overhead_low_s": 1280 * US, "overhead_high_s": 1320 * US}


def calls(work_us: float, n: int = 30, hidden_us: float = 0.0, stalls: int = 0, seed: int = 0) -> tuple[list[float], list[float]]:
    """Reported times and the judge's clock for `n` calls: host jitter of +-15 us, `stalls` calls descheduled
    for 3 ms inside the call (in both), `hidden_us` of work per call after the end event (in the clock only)."""
    rng = random.Random(seed)
    claimed, clock = [], []
    for i in range(n):
        t = work_us + (3000 if i < stalls else 0) + rng.uniform(-2, 2)
        claimed.append(t * US)
        clock.append((t + 1300 + rng.uniform(-15, 15) + hidden_us) * US)
    return claimed, clock


def test_an_honest_kernel_passes_even_with_calls_stalled_inside() -> None:
    claimed, clock = calls(27, stalls=12)  # 12 of 30 calls stalled by 3 ms: in the clock and the events alike
    bound = time_bound(claimed, clock, CALIBRATION, "cuda:0")
    assert bound.verdict is None, bound.verdict


def test_hidden_work_within_the_slack_is_the_bounds_resolution() -> None:
    """60 us after the end event, under the slack (4 x the no-op's 40 us spread = 160 us): not seen."""
    claimed, clock = calls(5, hidden_us=60)
    bound = time_bound(claimed, clock, CALIBRATION, "cuda:0")
    assert bound.verdict is None and bound.judged_s == bound.claimed_s


def test_work_hidden_past_the_slack_counts_in_the_time() -> None:
    """250 us hidden: past the slack, not past twice it. The call's time is the clock's less the no-op's 90th
    percentile and the slack: the hidden work beyond the slack is in it."""
    claimed, clock = calls(5, hidden_us=250)
    bound = time_bound(claimed, clock, CALIBRATION, "cuda:0")
    assert bound.verdict is None
    assert bound.claimed_s < 8 * US and bound.judged_s > (5 + 250 - 20 - 160 - 15) * US
    assert bound.clock_limited > len(claimed) // 2


def test_work_hidden_past_any_noise_is_refused() -> None:
    claimed, clock = calls(5, hidden_us=400)
    verdict = time_bound(claimed, clock, CALIBRATION, "cuda:0").verdict
    assert verdict is not None and "outside the timed events" in verdict


def test_an_honest_time_is_the_reported_one() -> None:
    claimed, clock = calls(100)
    bound = time_bound(claimed, clock, CALIBRATION, "cuda:0")
    assert bound.verdict is None and bound.judged_s == bound.claimed_s


def test_a_busy_host_makes_calls_slower_not_refused() -> None:
    """Every call 300 us late on the host (a machine compiling on every core): past the slack (200 us, the
    reported time), within twice it: the time is the clock's, the candidate is not called a liar."""
    claimed, clock = calls(200)
    busy = [c + 300 * US for c in clock]
    bound = time_bound(claimed, busy, CALIBRATION, "cuda:0")
    assert bound.verdict is None and bound.judged_s > bound.claimed_s + 50 * US


def test_a_reported_time_longer_than_the_clock_saw_is_refused() -> None:
    claimed, clock = calls(27)
    forged = [c + 5 * US for c in clock]  # each call claims more than the whole time from answer to answer
    verdict = time_bound(forged, clock, CALIBRATION, "cuda:0").verdict
    assert verdict is not None and "forged" in verdict


def test_a_gap_below_the_no_ops_is_not_a_lie() -> None:
    claimed, clock = calls(27)
    quiet = [c - 150 * US for c in clock]  # a quieter host than at calibration: 150 us less per call
    assert time_bound(claimed, quiet, CALIBRATION, "cuda:0").verdict is None


def test_a_few_slow_round_trips_move_nothing() -> None:
    claimed, clock = calls(27)
    clock = [c + (5000 * US if i % 10 == 0 else 0.0) for i, c in enumerate(clock)]  # 3 of 30 answers 5 ms late
    assert time_bound(claimed, clock, CALIBRATION, "cuda:0").verdict is None
