"""Routes to the harness and the network that avoid naming the module: each is refused by the static screen.

A candidate can reach `sys`, `builtins` or `os` through another module's attributes (`os.sys`, `torch.os`),
through `sys.modules`, through a module handed around as a value, or by building a name at run time. Each
spelling below is rejected by the named check, with a reason that names the line; the honest look-alikes
that follow pass.
"""

from __future__ import annotations

import pytest

from evo.audit import Level, audit

HEAD = "import os\nimport sys\nimport torch\nimport numpy as np\n"
TAIL = "\n\ndef run(x, weight):\n    return x * weight\n"
TASK = "kernels/rmsnorm_fwd"

ROUTES = [
    ("os_sys_modules", "m = os.sys.modules['socket']", "import_tricks"),
    ("os_sys_getframe", "f = os.sys._getframe(1)", "frame_walking"),
    ("torch_sys", "m = torch.sys.modules", "import_tricks"),
    ("numpy_sys_getframe", "g = np.sys._getframe", "frame_walking"),
    ("import_as_alias_sys", "import os as o\ns = o.sys\ns.modules['builtins'].__import__('soc' + 'ket')", "import_tricks"),
    ("from_os_import_sys", "from os import sys as s2", "import_tricks"),
    ("torch_os_system", "torch.os.system('ls')", "processes"),
    ("builtins_via_modules", "sys.modules['builtins'].__import__('soc' + 'ket')", "network"),
    ("os_sys_modules_builtins", "os.sys.modules['builtins'].__import__('ht' + 'tp')", "network"),
    ("dunder_import_computed", "name = ''.join(['soc', 'ket'])\nm = __import__(name)", "obfuscation"),
    ("builtins_import_computed", "import builtins\nm = builtins.__import__(str(1))", "obfuscation"),
    ("getattr_torch_computed", "f = getattr(torch, 'cu' + 'da'.upper())", "obfuscation"),
    ("getattr_torch_C_computed", "f = getattr(torch._C, str(1))", "obfuscation"),
    ("getattr_torch_ops_computed", "f = getattr(torch.ops.aten, str(1))", "obfuscation"),
    ("getattr_np_core_computed", "f = getattr(np.core, str(1))", "obfuscation"),
    ("getattr_os_reversed", "f = getattr(os, 'metsys'[::-1])", "obfuscation"),
    ("getattr_parameter_computed", "def get(m, n):\n    return getattr(m, n)", "obfuscation"),
    ("getattr_starred", "a = (torch, 'cuda')\nf = getattr(*a)", "obfuscation"),
    ("getattr_as_value", "import functools\nf = functools.reduce(getattr, ['sys'], os)", "obfuscation"),
    ("vars_module", "f = vars(torch)['cu' + 'da']", "obfuscation"),
    ("module_dict", "f = np.__dict__['co' + 're']", "obfuscation"),
    ("getattribute", "f = object.__getattribute__(np, 'co' + 're')", "obfuscation"),
    ("module_in_list", "[os][0].system('ls')", "obfuscation"),
    ("module_as_argument", "def call(m):\n    return m.system('ls')\ncall(os)", "obfuscation"),
    ("module_as_class_attribute", "class K:\n    m = os\nK.m.system('ls')", "obfuscation"),
    ("unresolved_object_os", "from torch import serialization\n[serialization][0].os.system('ls')", "import_tricks"),
    ("builtin_self", "len.__self__.__import__('soc' + 'ket')", "import_tricks"),
    ("match_class_pattern", "match os:\n    case object(system=f):\n        f('ls')", "processes"),
    ("posix_twin", "import posix\nposix.system('ls')", "processes"),
    ("private_socket", "import _socket", "network"),
    ("torch_hub", "torch.hub.load_state_dict_from_url('http://example.com/w.pt')", "network"),
]


@pytest.mark.parametrize(("body", "check"), [(b, c) for _, b, c in ROUTES], ids=[n for n, _, _ in ROUTES])
def test_route_is_refused_by_the_named_check(body: str, check: str) -> None:
    source = HEAD + body + TAIL
    verdict = audit(source, Level.SCREEN, TASK)
    failed = dict(verdict.reasons)
    assert check in failed, verdict.text()
    first = len(HEAD.splitlines()) + 1
    last = first + len(body.splitlines()) - 1
    assert any(f"line {n} " in failed[check] for n in range(first, last + 1)), failed[check]


def test_routes_are_distinct_spellings() -> None:
    assert len({b for _, b, _ in ROUTES}) == len(ROUTES) >= 8


def test_reason_names_the_detour() -> None:
    verdict = audit(HEAD + "from os import sys as s2" + TAIL, Level.SCREEN, TASK)
    reason = dict(verdict.reasons)["import_tricks"]
    assert "line 5 reaches `sys` through `os.sys`" in reason
    assert "kernel" not in reason.split(". ", 1)[1]  # the why speaks of any candidate


HONEST = [
    ("tensor_sum", "def total(x):\n    return x.sum()"),
    ("getattr_literal", "class Norm:\n    def w(self):\n        return getattr(self, 'weight')"),
    ("dtype", "DTYPE = torch.float32"),
    ("nn_modules_method", "class M(torch.nn.Module):\n    def count(self):\n        return len(list(self.modules()))"),
    ("nn_modules_package", "from torch.nn.modules import Linear"),
    ("numpy_select", "y = np.select([np.array([True])], [np.array([1])])"),
    ("torch_select", "def pick(x):\n    return torch.select(x, 0, 0)"),
    ("os_path_join", "p = os.path.join('a', 'b')"),
    ("module_is_none", "HAVE_NP = np is not None"),
    ("alias", "t = torch\nz = t.zeros(3)"),
    ("hasattr_literal", "ok = hasattr(torch, 'float8_e4m3fn')"),
    ("sys_version", "V = sys.version_info[:2]"),
]


@pytest.mark.parametrize("body", [b for _, b in HONEST], ids=[n for n, _ in HONEST])
def test_honest_look_alike_passes(body: str) -> None:
    verdict = audit(HEAD + body + TAIL, Level.SCREEN, TASK)
    assert verdict.passed, verdict.text()
