"""Cross-entropy backward in Triton: one program per token; an online logsumexp over blocks of the vocab,
then a second pass writes (softmax - onehot) * dloss."""

import torch
import triton
import triton.language as tl

BLOCK_V = 4096  # evo: [1024, 2048, 4096, 8192, 16384]
NUM_WARPS = 8  # evo: [2, 4, 8, 16, 32]


@triton.jit
def _cross_entropy_bwd_kernel(logits_ptr, targets_ptr, dloss_ptr, dlogits_ptr, V, stride, stride_out,
                              BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride
    cols = tl.arange(0, BLOCK_V)
    m = tl.full((), -float("inf"), tl.float32)  # running max
    s = tl.full((), 0.0, tl.float32)  # running sum of exp(logit - m)
    for v in range(0, V, BLOCK_V):
        x = tl.load(row_ptr + v + cols, mask=v + cols < V, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(s)
    target = tl.load(targets_ptr + row)
    dloss = tl.load(dloss_ptr + row)
    for v in range(0, V, BLOCK_V):
        mask = v + cols < V
        x = tl.load(row_ptr + v + cols, mask=mask, other=0.0).to(tl.float32)
        grad = tl.exp(x - lse) - tl.where(v + cols == target, 1.0, 0.0)
        tl.store(dlogits_ptr + row * stride_out + v + cols, (grad * dloss).to(dlogits_ptr.dtype.element_ty),
                 mask=mask)


def run(logits: torch.Tensor, targets: torch.Tensor, dloss: torch.Tensor) -> torch.Tensor:
    logits = logits.contiguous()
    T, V = logits.shape
    dlogits = torch.empty_like(logits)
    _cross_entropy_bwd_kernel[(T,)](logits, targets, dloss, dlogits, V, logits.stride(0), dlogits.stride(0),
                                    BLOCK_V=BLOCK_V, num_warps=NUM_WARPS)
    return dlogits
