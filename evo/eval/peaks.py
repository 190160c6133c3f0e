"""Datasheet peaks of the GPUs evo scores kernels on, and the speed-of-light time of a workload.

Dense (no sparsity) tensor-core rates; SXM parts. Sources:
- H100 SXM: NVIDIA H100 Tensor Core GPU datasheet (2023): BF16/FP16 989.4 TFLOPS dense (1,979 with
  sparsity), FP8/INT8 1,979 dense, TF32 494.7 dense, FP32 (non-tensor) 67 TFLOPS, HBM3 3.35 TB/s, L2 50 MB.
- H200 SXM: NVIDIA H200 datasheet (2024): same compute as H100 SXM, HBM3e 4.8 TB/s, L2 50 MB.
- B200 (HGX B200): NVIDIA Blackwell datasheet (2024): FP16/BF16 2.25 PFLOPS dense, FP8/INT8 4.5 dense,
  TF32 1.1 dense, FP32 80 TFLOPS (non-tensor, approximate), HBM3e 8 TB/s, L2 ~126 MB (two dies).
"""

from __future__ import annotations

from dataclasses import dataclass

TERA = 1e12


@dataclass(frozen=True)
class DevicePeaks:
    name: str
    flops: dict[str, float]  # dtype -> FLOP/s
    bandwidth: float  # bytes/s of device memory
    l2_bytes: int
    source: str


PEAKS: dict[str, DevicePeaks] = {
    "H100": DevicePeaks(
        "H100 SXM",
        {"bfloat16": 989.4 * TERA, "float16": 989.4 * TERA, "float8": 1979 * TERA, "int8": 1979 * TERA,
         "tf32": 494.7 * TERA, "float32": 67 * TERA},
        3.35 * TERA, 50 * 2**20, "NVIDIA H100 Tensor Core GPU datasheet, SXM5 column, dense rates"),
    "H200": DevicePeaks(
        "H200 SXM",
        {"bfloat16": 989.4 * TERA, "float16": 989.4 * TERA, "float8": 1979 * TERA, "int8": 1979 * TERA,
         "tf32": 494.7 * TERA, "float32": 67 * TERA},
        4.8 * TERA, 50 * 2**20, "NVIDIA H200 Tensor Core GPU datasheet, SXM column, dense rates"),
    "B200": DevicePeaks(
        "B200",
        {"bfloat16": 2250 * TERA, "float16": 2250 * TERA, "float8": 4500 * TERA, "int8": 4500 * TERA,
         "tf32": 1100 * TERA, "float32": 80 * TERA},
        8.0 * TERA, 126 * 2**20, "NVIDIA HGX B200 datasheet, per GPU, dense rates"),
}


def peaks_for(device_name: str) -> DevicePeaks:
    """The table entry for a `torch.cuda.get_device_name()` string; H100 when the name is unknown.

    Scoring against H100 figures on an unknown device keeps scores comparable across runs; the
    result records which entry was used.
    """
    upper = device_name.upper()
    for key in ("H200", "B200", "H100"):
        if key in upper:
            return PEAKS[key]
    return PEAKS["H100"]


def speed_of_light_s(flops: float, min_bytes: float, dtype: str, peaks: DevicePeaks) -> float:
    """T_SOL = max(FLOPs / peak rate of the dtype, bytes / peak bandwidth)."""
    rate = peaks.flops.get(dtype, peaks.flops["bfloat16"])
    return max(flops / rate, min_bytes / peaks.bandwidth)


def sol_score(t_kernel: float, t_baseline: float, t_sol: float) -> float:
    """SOL-ExecBench's score: 1 / (1 + (T_k - T_SOL) / (T_b - T_SOL)), clamped to [0, 1].

    0.5 is the baseline's speed, 1.0 the speed of light. A baseline at or under T_SOL (the
    datasheet is optimistic for tiny workloads) leaves no room to score: 0.5 then means "as fast".
    """
    if t_kernel <= 0:
        return 0.0
    room = t_baseline - t_sol
    if room <= 0:
        return 0.5 if t_kernel <= t_baseline else 0.5 * t_baseline / t_kernel
    return min(1.0, max(0.0, 1.0 / (1.0 + (t_kernel - t_sol) / room)))
