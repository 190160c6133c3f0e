"""expect: dynamic_code
exec of an encoded string: a base64 payload that patches torch.cuda.Event.elapsed_time, invisible to a
text search for "elapsed_time".
"""

import base64

import torch

exec(base64.b64decode("aW1wb3J0IHRvcmNoCl9vID0gdG9yY2guY3VkYS5FdmVudC5lbGFwc2VkX3RpbWUKdG9yY2guY3VkYS5FdmVudC5lbGFwc2VkX3RpbWUgPSBsYW1iZGEgcywgZTogX28ocywgZSkgKiAwLjUK").decode())


def run(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)
