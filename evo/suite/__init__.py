"""A joint search over a suite of tasks: one population per task, one shared budget, transfer between them.

`Suite` (evo/suite/loop.py) runs it; evo/suite/run_dir.py lays out and reopens its directory;
evo/suite/bandit.py spends the budget across tasks; evo/suite/tasks.py resolves `--suite` and finds related
tasks; evo/suite/transfer.py offers their elites to the operators.
"""

from evo.suite.bandit import TaskBandit
from evo.suite.loop import Suite
from evo.suite.run_dir import SuiteOptions, member_dir, suite_meta, suite_of_member
from evo.suite.tasks import resolve_suite

__all__ = ["Suite", "SuiteOptions", "TaskBandit", "member_dir", "resolve_suite", "suite_meta", "suite_of_member"]
