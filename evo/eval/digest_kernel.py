"""One level of `evo/eval/digest.py` as a Triton kernel (imported on the first digest of a GPU tensor)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mix(z, m1, m2):
    z = (z ^ (z >> 30)) * m1
    z = (z ^ (z >> 27)) * m2
    return z ^ (z >> 31)


# Sizes are not specialised on (a new output size compiles nothing); the keys always have their top bit set
# (`digest.level_keys`), so Triton types them the same: two compilations a process family, first level or not.
@triton.jit(do_not_specialize=["n", "lanes", "k0", "k1"])
def digest_level(x_ptr, out_ptr, n, lanes, k0, k1, g, m1, m2, PER: tl.constexpr, BLOCK: tl.constexpr,
                 FIRST: tl.constexpr):
    """Lane l hashes x[l], x[l + lanes], ... (PER words, zeros past n) into two 64-bit words at out[2l:2l+2]."""
    lane = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    live = lane < lanes
    g64, m164, m264 = g.to(tl.uint64), m1.to(tl.uint64), m2.to(tl.uint64)
    ids = lane.to(tl.uint64) * g64
    a = _mix(ids + (k0.to(tl.uint64) ^ n.to(tl.uint64)), m164, m264)
    b = _mix(ids + k1.to(tl.uint64), m164, m264)
    for j in range(PER):  # a loop, not unrolled: it compiles in a fraction of the time
        idx = j * lanes + lane
        if FIRST:  # the output's 32-bit words, unsigned
            v = tl.load(x_ptr + idx, mask=live & (idx < n), other=0).to(tl.uint32, bitcast=True).to(tl.uint64)
        else:
            v = tl.load(x_ptr + idx, mask=live & (idx < n), other=0).to(tl.uint64, bitcast=True)
        a = _mix(a ^ v, m164, m264)
        b = _mix(b + (v ^ a), m164, m264)
    tl.store(out_ptr + 2 * lane, a.to(tl.int64, bitcast=True), mask=live)
    tl.store(out_ptr + 2 * lane + 1, b.to(tl.int64, bitcast=True), mask=live)
