"""The kernels family's backend: a `KernelEvaluator` whose results carry the harness's checks and report,
and no verdict (the pipeline audits). Imports torch (through the harness): loaded only where kernels run.

`KernelEvaluator.evaluate` is to return exactly this; this class goes once it does."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from evo.eval.backends.base import EvalResult
from evo.eval.backends.kernel import KernelEvaluator, report_to_result
from evo.program import Program, source_files


class HarnessBackend(KernelEvaluator):
    async def evaluate(self, program: Program) -> EvalResult:
        start = time.perf_counter()
        workdir = Path(tempfile.mkdtemp(prefix=f"{program.id[:12]}-", dir=self.session))
        try:
            for rel, text in source_files(program.source).items():
                path = (workdir / rel).resolve()
                if not path.is_relative_to(workdir.resolve()):
                    return EvalResult(False, failure="invalid", error=f"file path {rel!r} leaves the program directory")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            report = await asyncio.get_running_loop().run_in_executor(None, self.evaluate_path_sync, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        result = report_to_result(report, time.perf_counter() - start)
        result.checks = [(str(n), bool(p), str(r or "")) for n, p, r in report.get("checks", [])]
        result.report = report
        return result
