"""Which endpoint of an ensemble a request goes to, and when requests wait: the ensemble's health.

`Failover` holds the endpoints of one `LLMClient` and what the client has learnt of them. A
request picks an endpoint at random in proportion to the weights, so a big and a small model can
share the work in a chosen ratio; a request that failed on one endpoint tries the others it has not
tried yet first, and an endpoint that failed is passed over by later requests for a cool-down
period while others are healthy.

When every endpoint is down (the run outlives a server restart, a node reboots), the client
declares an outage: the call that found it raises, later calls wait (the proposals pause) while
one probe call at a time tries again after a pause that doubles from `pause_s` up to
`max_pause_s`; a warning is logged (logger `evo.llm.failover`) when the outage starts, when the
pause grows, and when the servers answer again.

Endpoints serving the same model form one *model group* (`model_groups`): a call that prefers a
group is sent to it first and fails over to the other groups only when the whole group has
failed it. With a `roster` the endpoint list is re-read while the search runs
(`evo.llm.endpoints.Roster`), and an outage's pause ends early when the list changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from evo.errors import EvoError
from evo.llm.endpoints import SPEC_EXAMPLE, Endpoint, Roster

__all__ = ["Failover"]

log = logging.getLogger(__name__)


class Failover:
    """The endpoints of one client, their health, and the outage pause (see the module docstring).

    The client asks `await_turn` before a call and tells `end_turn` after it, `outage` when the call
    found no endpoint that answers and `recovered` when it was answered; within a call, it `pick`s an
    endpoint for each attempt and says whether the endpoint `answered` or `failed`.
    `cooldown_s` is how long a failed endpoint is passed over; `pause_s` and `max_pause_s` bound
    the pause of an outage. `roster`: the registry the endpoints follow (their first list is its).
    """

    def __init__(self, endpoints: Sequence[Endpoint], *, roster: Roster | None = None, cooldown_s: float = 30.0,
                 pause_s: float = 5.0, max_pause_s: float = 60.0) -> None:
        endpoints = roster.endpoints if roster is not None else endpoints
        if not endpoints:
            raise EvoError(f"No LLM endpoint given: pass at least one, e.g. --llm {SPEC_EXAMPLE}")
        if any(not (math.isfinite(e.weight) and e.weight > 0) for e in endpoints):
            raise EvoError("Every LLM endpoint weight must be a positive number.")
        self.endpoints = list(endpoints)  # replaced whole (never changed in place) when the roster changes
        self.roster = roster
        self._roster_version = roster.version if roster is not None else 0
        self.cooldown_s = cooldown_s
        self.pause_s = pause_s
        self.max_pause_s = max_pause_s
        self.successes: Counter[str] = Counter()  # endpoint url -> requests it answered
        self.failures: Counter[str] = Counter()  # endpoint url -> transient failures it caused
        self._down_until: dict[str, float] = {}  # endpoint url -> monotonic time its cool-down ends
        self.outages = 0  # outages declared so far (every endpoint failed a call)
        self._outage_since: float | None = None  # monotonic start of the current outage
        self._paused_until = 0.0  # no call starts before this (monotonic) during an outage
        self._pause = pause_s  # the next pause of this outage
        self._probing = False  # a call is testing whether the outage is over

    # ----- one attempt: which endpoint, and how it went -----

    def pick(self, rng: np.random.Generator, tried: set[int], prefer: Sequence[int] | None,
             endpoints: Sequence[Endpoint]) -> int:
        """An index of `endpoints` by weight: untried-and-healthy, then untried, then any; at each
        step the preferred endpoints (a model group) first, then the others."""
        now = time.monotonic()
        indices = list(range(len(endpoints)))
        preferred = [i for i in prefer if 0 <= i < len(indices)] if prefer else indices
        untried = [i for i in indices if i not in tried]
        healthy = [i for i in untried if self._down_until.get(endpoints[i].url, 0.0) <= now]
        first = set(preferred)
        candidates = (
            [i for i in healthy if i in first] or healthy
            or [i for i in untried if i in first] or untried
            or preferred
        )
        if len(candidates) == 1:
            return candidates[0]
        weights = np.array([endpoints[i].weight for i in candidates], dtype=float)
        return candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]

    def answered(self, endpoint: Endpoint) -> None:
        """The endpoint answered a request: it is healthy again."""
        self.successes[endpoint.url] += 1
        self._down_until.pop(endpoint.url, None)

    def failed(self, endpoint: Endpoint) -> None:
        """The endpoint failed a request for a transient reason: passed over for `cooldown_s`."""
        self.failures[endpoint.url] += 1
        self._down_until[endpoint.url] = time.monotonic() + self.cooldown_s
        if self.roster is not None:
            self.roster.stale()  # it may have moved: the registry is read again soon

    # ----- outages: every endpoint down -----

    @property
    def in_outage(self) -> bool:
        """Whether the last calls found every endpoint down (and none has answered since)."""
        return self._outage_since is not None

    async def await_turn(self) -> bool:
        """Wait while an outage pauses the calls; True if this call is the one probing."""
        changed = self._follow()
        while self._outage_since is not None:
            if changed:
                self._paused_until = 0.0  # the endpoints changed: try them now, not after the pause
            wait = self._paused_until - time.monotonic()
            if wait <= 0 and not self._probing:
                self._probing = True
                return True
            await asyncio.sleep(min(max(wait, 0.05), 1.0))
            changed = self._follow()
        return False

    def end_turn(self, probing: bool) -> None:
        """The call that `await_turn` let through is over, however it ended."""
        if probing:
            self._probing = False

    def _follow(self) -> bool:
        """Take up the roster's endpoints if they changed (and start a re-read if one is due); whether they did."""
        if self.roster is None:
            return False
        self.roster.kick()
        if self.roster.version == self._roster_version:
            return False
        self._roster_version = self.roster.version
        self.endpoints = self.roster.endpoints
        return True

    def outage(self, why: str, probing: bool) -> None:
        """A call found no endpoint that answers (`why`: its last failure): start or lengthen the pause."""
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            self._pause = self.pause_s
            self.outages += 1
            log.warning("LLM server(s) unreachable or not answering usably (%s). LLM proposals pause and retry in %.0f s; "
                        "evaluations go on.", why, self._pause)
        elif probing:
            self._pause = min(self._pause * 2, self.max_pause_s)
            log.warning("LLM server(s) still unreachable or unusable after %.0f s; next try in %.0f s.",
                        now - self._outage_since, self._pause)
        else:
            return  # a call that was in flight when the outage began: the pause is set already
        self._paused_until = now + self._pause

    def recovered(self) -> None:
        """A call was answered: an outage, if any, is over."""
        if self._outage_since is not None:
            log.warning("LLM server(s) answer again after %.0f s: LLM proposals resume.",
                        time.monotonic() - self._outage_since)
            self._outage_since = None
