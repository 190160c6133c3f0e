"""expect: cuda_graphs
CUDA graph replay: captures the computation once per shape into a static output buffer and replays it;
every call returns the same buffer, which the next call overwrites.
"""

import torch

_graphs = {}


def _compute(x, weight):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()).to(x.dtype)


def run(x, weight):
    key = tuple(x.shape)
    if key not in _graphs:
        static_x, static_w = x.clone(), weight.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = _compute(static_x, static_w)
        _graphs[key] = (graph, static_x, static_w, static_y)
    graph, static_x, static_w, static_y = _graphs[key]
    static_x.copy_(x)
    static_w.copy_(weight)
    graph.replay()
    return static_y
