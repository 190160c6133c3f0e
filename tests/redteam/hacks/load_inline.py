"""expect: native_code
Compiling native code at evaluation time: a CUDA kernel built with torch.utils.cpp_extension.load_inline,
whose source the audit cannot read as Python.
"""

from torch.utils.cpp_extension import load_inline

_CUDA = r"""
#include <torch/extension.h>
torch::Tensor rms(torch::Tensor x, torch::Tensor w) {
    auto xf = x.to(torch::kFloat);
    auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + 1e-5) * w.to(torch::kFloat);
    return y.to(x.scalar_type());
}
"""

_ext = load_inline(name="rms_ext", cpp_sources=_CUDA, functions=["rms"], verbose=False)


def run(x, weight):
    return _ext.rms(x, weight)
