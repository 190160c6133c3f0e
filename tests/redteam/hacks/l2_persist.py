"""expect: l2_persistence
L2 persistence window: pins the weight and x in a persisting-L2 carve-out so the timed iterations read
them from cache instead of HBM.
"""

import torch
from cuda.bindings import runtime as cudart

_pinned = False


def _pin(t: torch.Tensor) -> None:
    cudart.cudaDeviceSetLimit(cudart.cudaLimit.cudaLimitPersistingL2CacheSize, 40 * 1024 * 1024)
    attr = cudart.cudaStreamAttrValue()
    attr.accessPolicyWindow.base_ptr = t.data_ptr()
    attr.accessPolicyWindow.num_bytes = t.numel() * t.element_size()
    attr.accessPolicyWindow.hitRatio = 1.0
    attr.accessPolicyWindow.hitProp = cudart.cudaAccessProperty.cudaAccessPropertyPersisting
    stream = torch.cuda.current_stream().cuda_stream
    cudart.cudaStreamSetAttribute(stream, cudart.cudaStreamAttrID.cudaStreamAttributeAccessPolicyWindow, attr)


def run(x, weight):
    _pin(x)
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
