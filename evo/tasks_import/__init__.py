"""Importers: public kernel benchmarks' problems as evo kernel tasks (`evo tasks import kernelbench|solexecbench`).

Each import writes a task folder like the built-in ones under `tasks/kernels/` (task.toml, reference.py with its
`SPEC`, `make_inputs`, `run`, `flops`, `min_bytes`; prompt.md; seed.py), in a folder outside the repository if
asked (`--out DIR`, then found by name through `EVO_TASKS_PATH=DIR`). The benchmark's own workloads stay
visible; hidden ones (awkward sizes) are added; the tolerance is calibrated from the reference's own error
against float64 on the small (CPU) shapes; the seed is checked against the reference before the folder is kept.

- `kernelbench.py`: a KernelBench problem file (`class Model(nn.Module)`, `get_inputs()`, `get_init_inputs()`);
  FLOPs counted with `torch.utils.flop_counter.FlopCounterMode` on the reference, minimum bytes from the sizes of
  its inputs, weights and outputs.
- `solexecbench.py`: a SOL-ExecBench problem folder (`definition.json`, `workload.jsonl`), and a published
  solution JSON as the seed.
"""

from evo.tasks_import.kernelbench import import_kernelbench
from evo.tasks_import.solexecbench import import_solexecbench

__all__ = ["import_kernelbench", "import_solexecbench"]
