"""The auditor: static checks, dynamic checks, and the gate that turns them into a verdict with reasons.

Its one caller is the evaluation pipeline (`evo/eval/pipeline.py`); the calls it makes:

    from evo.audit import audit, Level
    verdict = audit(source, Level.SCREEN, task)   # before evaluation: static, a few milliseconds
    verdict = audit(source, Level.FULL, task, context={"dynamic": harness_results})  # before admission
    verdict.passed, verdict.reasons, verdict.to_dict()

`docs/auditor.md` lists every check, the hack it stops and the test that proves it.
"""

from evo.audit.checks import Check, CheckResult, Level, Subject, Verdict
from evo.audit.gate import (
           DYNAMIC_CHECKS,
           DynamicCheck,
           audit,
           catalogue,
           register_dynamic,
           screen,
           task_policy,
)

__all__ = ["DYNAMIC_CHECKS", "Check", "CheckResult", "DynamicCheck", "Level", "Subject", "Verdict", "audit",
           "catalogue", "register_dynamic", "screen", "task_policy"]
