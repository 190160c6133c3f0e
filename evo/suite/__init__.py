"""A joint search over a suite of tasks: one population per task, one shared budget, transfer between them.

`evo.suite.loop.Suite` runs it; evo/suite/run_dir.py creates and reopens its directory (evo/suite/layout.py
says where what lies); evo/suite/bandit.py spends the budget across tasks; evo/suite/tasks.py resolves
`--suite` and finds related tasks; evo/suite/transfer.py offers their elites to the operators. This package's
top level stays light (no engine): `evo show` and `evo report` read a suite's layout through it.
"""

from evo.suite.layout import member_dir, suite_meta, suite_of_member

__all__ = ["member_dir", "suite_meta", "suite_of_member"]
