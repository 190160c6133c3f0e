"""expect: ctypes
ctypes: calls the CUDA runtime directly to raise the persisting-L2 limit... and to memcpy a saved result.
"""

import ctypes

import torch

_rt = ctypes.CDLL("libcudart.so")
_saved = {}


def run(x, weight):
    T, D = x.shape
    y = torch.empty_like(x)
    src = _saved.get((T, D))
    if src is not None:
        _rt.cudaMemcpy(ctypes.c_void_p(y.data_ptr()), ctypes.c_void_p(src.data_ptr()),
                       ctypes.c_size_t(y.numel() * 2), 3)
        return y
    xf = x.float()
    y.copy_((xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype))
    return y
