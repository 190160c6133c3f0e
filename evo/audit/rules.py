"""The rule tables of the static checks: which names, identifiers and strings each check refuses, and the
sentences its reasons end with. Kept apart from the checks (`evo.audit.static`) so that adding a rule is a
one-line edit here.

Each rule maps to `(check, capability)`: a task may allow the whole check or only the capability.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

# -- why each check exists: the second half of every reason ------------------------------------------
WHY: dict[str, str] = {
    "threads": "Work left running in another thread can finish after the harness stops its timer, or change "
               "an output after it was checked. Do all the work inside run(), on the calling thread.",
    "processes": "A child process escapes the sandbox's accounting: it can compute outside the timer or change "
                 "the machine (clocks, files). Do the work in run(), in this process.",
    "network": "The evaluation machine is offline, and a connection could fetch answers or leak hidden shapes. "
               "Compute everything locally.",
    "ctypes": "Foreign calls and raw pointers reach past torch: they can read other tensors' memory, call the "
              "CUDA driver or patch the harness. Use torch and Triton only.",
    "gc": "The garbage collector lists every live object, the harness's expected outputs included. "
          "A candidate has no use for it.",
    "inspect": "Introspection reads the harness's frames and source. A candidate has no use for it.",
    "frame_walking": "Walking the call stack reads the harness's local variables (expected outputs, timers, "
                     "call counts). Use only the arguments run() receives.",
    "import_tricks": "Changing how modules are found, loaded or built in lets a candidate replace torch, "
                     "triton, numpy or the harness; reaching a module through another module's attributes "
                     "(`os.sys`, `torch.os`, `len.__self__`) or through `sys.modules` uses what the screen "
                     "refuses by name without naming it. Import modules with plain import statements.",
    "monkeypatching": "Replacing a function or attribute of an imported module (torch, triton, time, the "
                      "harness), or reconfiguring torch's allocator or Triton's driver, changes what the "
                      "harness measures or checks: a patched timer or allclose is a fake score. Leave library "
                      "objects as they are; define your own helpers.",
    "precision_flags": "Global numeric settings (TF32, reduced-precision reductions, autocast, default dtype) "
                       "change the reference's precision and every later candidate's; the task fixes them. "
                       "Choose precision inside your kernel (e.g. accumulate in fp32) instead.",
    "l2_persistence": "A persisting-L2 window keeps the inputs in cache across timed iterations, so the timer "
                      "measures cache hits instead of memory traffic. Leave the cache configuration alone.",
    "native_code": "Native code (compiled at evaluation time, loaded from a library, or driver calls through "
                   "cuda-python) escapes the audit: its source is not Python, it runs with full access to the "
                   "process, and compiling costs minutes. Write the kernel with @triton.jit; that is the only "
                   "compiler allowed.",
    "side_streams": "The harness times the current stream; work launched on another stream or device "
                    "escapes the timer (a deferred join looks thousands of times faster). Launch everything "
                    "on the current stream.",
    "cuda_graphs": "A captured graph replays into the same output buffer on every call, so the tensor returned "
                   "last time is overwritten, and replay skips the launch work being measured. Launch the "
                   "kernels directly.",
    "tensor_subclass": "The harness requires type(output) is torch.Tensor: a subclass or a swapped __class__ "
                       "can defer or fake its values until they are compared. Return plain tensors.",
    "dispatch_override": "Intercepting torch's dispatcher (__torch_function__, __torch_dispatch__, modes, "
                         "torch.library) changes what torch computes, the harness's comparisons included. "
                         "Call torch and Triton as they are.",
    "fallback": "A try/except around the kernel launch that returns a result computed another way hides a "
                "failing kernel behind a torch fallback, scored as if the kernel had run. Let errors raise; "
                "retrying with another Triton config (a launch in the handler) is fine.",
    "reference": "The score is for your code: importing or reading the reference or the harness returns "
                 "their answer (or their secrets) instead. Implement the computation yourself.",
    "module_state": "State kept between calls (module-level caches, counters, globals, closures, mutable "
                    "defaults, lru_cache on tensor arguments, keys built from id()/data_ptr()/content) lets "
                    "run() return stale or cached outputs, or behave differently once warm-up is over. Compute "
                    "every output afresh from the inputs; immutable module constants (tuples, numbers) are fine.",
    "environment": "The harness, torch and Triton read environment variables (TRITON_*, CUDA_*, "
                   "NVIDIA_TF32_OVERRIDE, EVO_*); changing them alters how the reference and later "
                   "candidates run. Leave os.environ alone.",
    "dynamic_code": "Code built from strings or bytes at run time (eval, exec, compile, unpickling, code "
                    "objects) cannot be audited. Write the code out.",
    "sleep_and_clock": "A kernel has no use for the clock: the harness times it, and sleeps and clock reads are "
                       "how warm-up detectors, busy-waits and delayed writes are built. Remove them.",
    "signals": "Handlers that run later (signals, atexit, audit hooks, finalizers, __del__) do work outside "
               "run() and outside the timer. Do all the work inside run().",
    "file_writes": "A file outlives the evaluation and can carry answers from one evaluation to the next (or "
                   "change the environment: a .pth, a torch.py). Return results; write no files.",
    "file_reads": "A candidate has nothing to read on disk: listing directories, reading outside the working "
                  "directory or next to __file__ is how reference code, cached outputs or harness files are "
                  "found. Use only the inputs run() receives.",
    "obfuscation": "Names built at run time (getattr or setattr with a computed name on any object, since "
                   "any object may hold a module; __import__ of a computed module name; vars(), __dict__, "
                   "__getattribute__) and data decoded at run time hide what is called, and the audit must "
                   "be able to read every call. Write names out literally.",
    "entry_point": "The harness calls `run` with the task's inputs; without it nothing is measured.",
    "syntax": "The program must parse before it can be evaluated.",
    "kernel_provenance": "An archived kernel solution must be a Triton kernel: a run() made of torch calls "
                         "only is the baseline, not a solution. Launch a @triton.jit kernel from run().",
}


def _r(check: str, capability: str | None = None) -> tuple[str, str]:
    return check, capability or check


# -- dotted names: matched on every reference (imports, loads, calls, stores) --------------------------
NAME_RULES: dict[str, tuple[str, str]] = {}


def _names(check: str, names: Iterable[str], capability: str | None = None) -> None:
    for n in names:
        NAME_RULES[n] = _r(check, capability)


_names("threads", ["threading", "_thread", "concurrent", "os.register_at_fork"])
_names("threads", ["asyncio"], "asyncio")
_names("processes", ["subprocess", "pty", "multiprocessing", "torch.multiprocessing", "pexpect", "sh", "plumbum",
                     "os.system", "os.popen", "os.fork", "os.forkpty", "os.kill", "os.killpg", "os.posix_spawn",
                     "os.posix_spawnp", "os.setsid", "os.nice"]
       + [f"os.spawn{s}" for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")]
       + [f"os.exec{s}" for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")])
_names("network", ["socket", "ssl", "socketserver", "urllib", "urllib3", "http", "requests", "httpx", "httpx2",
                   "aiohttp", "ftplib", "smtplib", "poplib", "imaplib", "telnetlib", "xmlrpc", "websocket",
                   "websockets", "grpc", "zmq", "paramiko", "pycurl", "webbrowser", "torch.distributed",
                   "torch.hub", "torch.utils.model_zoo", "numpy.DataSource", "numpy.lib._datasource",
                   "numpy.lib.npyio.DataSource"])
_names("ctypes", ["ctypes", "_ctypes"], "ctypes")
_names("ctypes", ["cffi", "_cffi_backend"], "cffi")
_names("ctypes", ["mmap"], "mmap")
_names("ctypes", ["numpy.ctypeslib"], "ctypes")
_names("ctypes", ["torch._C", "torch.cuda.cudart", "torch._utils._get_device_module"], "torch_C")
_names("gc", ["gc", "sys.getobjects", "objgraph", "guppy"])
_names("inspect", ["inspect", "dis", "types.FrameType", "types.TracebackType"])
_names("frame_walking", ["sys._getframe", "sys._getframemodulename", "sys._current_frames",
                         "sys._current_exceptions", "sys.settrace", "sys.setprofile", "sys.monitoring",
                         "sys.exc_info", "sys.exception", "sys.last_traceback", "sys.last_exc",
                         "threading.settrace", "threading.setprofile"]
       + [f"traceback.{f}" for f in ("extract_stack", "walk_stack", "walk_tb", "format_stack", "print_stack",
                                     "extract_tb", "StackSummary", "FrameSummary", "TracebackException")])
_names("import_tricks", ["importlib", "imp", "pkgutil", "zipimport", "runpy", "site", "sys.meta_path",
                         "sys.path_hooks", "sys.path_importer_cache", "sys.path", "sys.modules",
                         "builtins.__import__"])
_names("monkeypatching", ["unittest.mock", "mock", "pytest", "_pytest", "triton.runtime.driver.set_active",
                          "triton.runtime.driver.reset_active"])
_names("monkeypatching", ["torch.cuda.memory._set_allocator_settings", "torch.cuda.set_per_process_memory_fraction",
                          "torch.cuda.memory.change_current_allocator", "torch.cuda.memory.CUDAPluggableAllocator",
                          "torch.cuda.caching_allocator_alloc", "torch.cuda.memory.caching_allocator_alloc",
                          "torch.cuda.change_current_allocator"], "allocator")
_names("precision_flags", ["torch.backends", "torch.set_float32_matmul_precision", "torch.set_default_dtype",
                           "torch.set_default_tensor_type", "torch.set_flush_denormal",
                           "torch.use_deterministic_algorithms", "torch.set_default_device", "torch.autocast",
                           "torch.cuda.amp", "torch.amp", "torch.cpu.amp", "torch.set_autocast_enabled",
                           "torch.set_autocast_gpu_dtype", "torch.set_autocast_dtype"])
_names("native_code", ["torch.utils.cpp_extension", "torch.cuda.jiterator", "torch.ops.load_library",
                       "torch.classes.load_library", "tvm", "pycuda", "cuda", "nvrtc", "tilelang", "taichi",
                       "warp", "jax", "jaxlib", "distutils", "setuptools", "cppimport", "pybind11", "cython",
                       "Cython", "pyximport", "ctypes.CDLL", "ctypes.cdll", "ctypes.PyDLL", "ctypes.pydll",
                       "ctypes.LoadLibrary", "ctypes.util", "cffi.FFI", "triton.compile",
                       "triton.runtime.driver.active.utils.load_binary",
                       "numpy.f2py", "numpy.distutils"])
_names("native_code", ["torch.compile", "torch._dynamo", "torch._inductor", "torch._export"], "torch_compile")
_names("native_code", ["torch.jit"], "torch_jit")
_names("native_code", ["cupy", "cupyx"], "cupy")
_names("native_code", ["numba"], "numba")
_names("native_code", ["cutlass", "cute"], "cutlass")
_names("side_streams", ["torch.cuda.Stream", "torch.cuda.stream", "torch.cuda.streams", "torch.cuda.ExternalStream",
                        "torch.cuda.set_stream", "torch.cuda._set_stream", "torch.cuda.default_stream",
                        "torch.cuda.StreamContext", "torch.Stream", "torch.accelerator.set_stream",
                        "torch.cuda.Event.wait"])
_names("side_streams", ["torch.cuda.set_device", "torch.cuda.device", "torch.cuda._DeviceGuard",
                        "torch.accelerator.set_device_index"], "device_switch")
_names("cuda_graphs", ["torch.cuda.graph", "torch.cuda.graphs", "torch.cuda.CUDAGraph",
                       "torch.cuda.make_graphed_callables", "torch.cuda.graph_pool_handle",
                       "triton.testing.do_bench_cudagraph"])
_names("tensor_subclass", ["torch.Tensor._make_subclass", "torch.Tensor._make_wrapper_subclass",
                           "torch.Tensor.as_subclass"])
_names("dispatch_override", ["torch.overrides", "torch.utils._python_dispatch", "torch.library", "torch._library",
                             "torch.utils._mode_utils", "torch._C._disabled_torch_function_impl",
                             "torch._C.DisableTorchFunction", "torch._C.DisableTorchFunctionSubclass",
                             "torch._C._EnableTorchFunction", "torch._ops", "torch.fx"])
_names("reference", ["evo", "tasks", "reference", "evo_reference", "__main__", "sys.argv", "sys.orig_argv"])
_names("environment", ["os.putenv", "os.unsetenv"])
_names("dynamic_code", ["builtins.eval", "builtins.exec", "builtins.compile", "builtins.breakpoint", "marshal",
                        "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle", "dill", "cloudpickle",
                        "types.CodeType", "types.FunctionType", "types.LambdaType", "code", "codeop"])
_names("sleep_and_clock", ["time.sleep", "time.time", "time.time_ns", "time.perf_counter", "time.perf_counter_ns",
                           "time.monotonic", "time.monotonic_ns", "time.process_time", "time.process_time_ns",
                           "time.thread_time", "time.thread_time_ns", "time.clock_gettime",
                           "time.clock_gettime_ns", "asyncio.sleep", "torch.cuda._sleep", "select", "selectors",
                           "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today"])
_names("signals", ["signal", "atexit", "faulthandler", "sys.addaudithook", "sys.audit", "weakref.finalize",
                   "threading.excepthook"])
_names("module_state", ["builtins.globals", "builtins.locals", "weakref", "shelve", "dbm"])
_names("file_writes", ["shutil", "tempfile", "sqlite3", "logging.FileHandler", "logging.handlers"], "file_write")
_names("file_writes", ["os.chdir", "os.fchdir", "os.chroot"], "file_write_outside")
_names("file_reads", ["glob", "os.listdir", "os.scandir", "os.walk", "os.fwalk", "fnmatch", "linecache"])
_names("obfuscation", ["base64", "binascii", "codecs", "zlib", "bz2", "lzma", "builtins.bytes.fromhex",
                       "operator.attrgetter", "operator.methodcaller", "builtins.vars"])

# Names matched only when something is assigned or deleted (other stores go to monkeypatching).
STORE_RULES: dict[str, tuple[str, str]] = {
    "torch.backends": _r("precision_flags"),
    "os.environ": _r("environment"), "os.environb": _r("environment"),
    "sys.modules": _r("import_tricks"), "sys.path": _r("import_tricks"), "sys.meta_path": _r("import_tricks"),
    "sys.path_hooks": _r("import_tricks"), "builtins": _r("import_tricks"),
    "sys.excepthook": _r("signals"), "sys.unraisablehook": _r("signals"), "sys.displayhook": _r("signals"),
    "sys.breakpointhook": _r("signals"),
}
STARTS_RULES: tuple[tuple[str, tuple[str, str]], ...] = (
    ("torch._C._dispatch", _r("dispatch_override")), ("torch._C._set_torch", _r("dispatch_override")),
    ("torch._C._push_on", _r("dispatch_override")), ("evo_task_", _r("reference")),
)

# -- identifiers: attribute names and names of definitions --------------------------------------------
# Attribute names that are guarded modules: `obj.os`, `[torch][0].sys` reach the module through an object
# the screen cannot resolve (resolved spellings such as `torch.os.system` resolve to `os.system`).
MODULE_ATTRS = frozenset({"sys", "builtins", "os", "posix", "subprocess", "socket", "_socket", "ssl", "urllib",
                          "http", "importlib", "ctypes", "gc", "inspect", "pickle", "marshal", "shutil",
                          "threading", "multiprocessing"})
IDENT_RULES: dict[str, tuple[str, str]] = {
    **{n: _r("frame_walking") for n in ("f_back", "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame",
                                        "tb_next", "gi_frame", "cr_frame", "ag_frame", "__traceback__")},
    **{n: _r("tensor_subclass") for n in ("_make_subclass", "_make_wrapper_subclass", "as_subclass")},
    **{n: _r("dispatch_override") for n in ("__torch_function__", "__torch_dispatch__")},
    **{n: _r("side_streams") for n in ("wait_stream", "record_stream")},
    **{n: _r("cuda_graphs") for n in ("capture_begin", "capture_end", "CUDAGraph")},
    **{n: _r("precision_flags") for n in ("allow_tf32", "allow_bf16_reduced_precision_reduction",
                                          "allow_fp16_reduced_precision_reduction", "fp32_precision")},
    **{n: _r("dynamic_code") for n in ("__code__", "__globals__", "__closure__")},
    **{n: _r("import_tricks") for n in ("__builtins__", "__loader__", "__spec__", "__subclasses__", "__bases__",
                                         "__mro__")},
    **{n: _r("import_tricks") for n in ("__self__", "__import__")},
    **{n: _r("import_tricks") for n in MODULE_ATTRS},
    **{n: _r("frame_walking") for n in ("_getframe", "_current_frames")},
    **{n: _r("obfuscation") for n in ("__getattribute__", "__getattr__")},
    "__del__": _r("signals"),
    "load_inline": _r("native_code"), "RawKernel": _r("native_code"), "RawModule": _r("native_code"),
    "SourceModule": _r("native_code"), "CDLL": _r("native_code"),
    "__dict__": _r("obfuscation"),
    "tofile": _r("file_writes", "file_write"), "write_text": _r("file_writes", "file_write"),
    "write_bytes": _r("file_writes", "file_write"), "touch": _r("file_writes", "file_write"),
    "symlink_to": _r("file_writes", "file_write"), "hardlink_to": _r("file_writes", "file_write"),
    "savefig": _r("file_writes", "file_write"), "read_text": _r("file_reads"), "read_bytes": _r("file_reads"),
    "iterdir": _r("file_reads"), "rglob": _r("file_reads"),
}
L2_PATTERN = re.compile(r"persisting|accesspolicywindow|access_policy_window|streamsetattribute|streamattr|"
                        r"hitratio|hitprop|missprop|accessproperty|setlimit|l2cachesize|l2_cache_size", re.I)

# -- string constants ------------------------------------------------------------------------------------
STRING_RULES: tuple[tuple[re.Pattern[str], tuple[str, str]], ...] = (
    (re.compile(r"sitecustomize|usercustomize|\.pth\b|site-packages|dist-packages"), _r("import_tricks")),
    (re.compile(r"reference\.py|evo_task_|evo_reference|task\.toml|outputs\.npz|\bEVO_[A-Z]"), _r("reference")),
    (re.compile(r"allow_tf32|reduced_precision_reduction|NVIDIA_TF32_OVERRIDE|TORCH_ALLOW_TF32|fp32_precision"),
     _r("precision_flags")),
    (re.compile(r"\bnvcc\b|-arch=sm_|__global__|#include|\bnvrtc\b|\bg\+\+|\bclang\b|\.so(\.\d+)*$|\.cu$|"
                r"\bcuobjdump\b|\bptxas\b"), _r("native_code")),
    (re.compile(r"\bnvidia-smi\b"), _r("processes")),
    (re.compile(r"^/(proc|dev|sys)/"), _r("file_reads")),
    (re.compile(r"^(rot_?13|base64|hex_codec|zlib_codec|bz2_codec)$"), _r("obfuscation")),
    (re.compile(r"^(_getframe|f_back|f_globals|tb_frame)$"), _r("frame_walking")),
    (re.compile(r"^(eval|exec|compile|__import__)$"), _r("dynamic_code")),
)

OPEN_CALLS = frozenset({"builtins.open", "io.open", "codecs.open", "gzip.open", "bz2.open", "lzma.open",
                        "tarfile.open", "zipfile.ZipFile", "os.fdopen", "io.FileIO", "os.open"})
WRITE_CALLS = frozenset({f"os.{f}" for f in (
    "remove", "unlink", "rename", "renames", "replace", "makedirs", "mkdir", "rmdir", "removedirs", "symlink",
    "link", "chmod", "chown", "lchown", "truncate", "ftruncate", "utime", "mkfifo", "mknod", "write", "writev",
    "pwrite", "sendfile", "copy_file_range")} | {
    "torch.save", "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt", "numpy.memmap",
    "numpy.lib.format.open_memmap", "pickle.dump", "json.dump", "marshal.dump", "logging.basicConfig",
    "torch.from_file", "torch.UntypedStorage.from_file"})
READ_CALLS = frozenset({"torch.load", "numpy.load", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile",
                        "json.load", "os.read", "io.open_code"})
OUTSIDE_HINTS = ("__file__", "home", "expanduser", "gettempdir", "tempfile", "prefix", "getsitepackages",
                 "getusersitepackages", "cwd", "getcwd", "environ", "argv", "resolve", "absolute", "parent",
                 "parents", "abspath", "realpath")


TENSOR_BASES = frozenset({"torch.Tensor", "torch._C.TensorBase", "torch._C._TensorBase", "torch.nn.Parameter",
                          "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer", "torch.nn.Buffer",
                          "torch._tensor.Tensor"})
SHADOWED = frozenset(sys.stdlib_module_names) | {"torch", "triton", "numpy", "evo", "reference", "sitecustomize"}

FACT_CHECKS: dict[str, tuple[str, str]] = {
    "global_write": _r("module_state"), "state_write": _r("module_state"), "outer_use": _r("module_state"),
    "mutable_default": _r("module_state"), "key": _r("module_state"), "cache_call": _r("module_state"),
    "instance_write": _r("module_state"), "state_object": _r("module_state"),
    "class_swap": _r("tensor_subclass"), "dynamic_attr": _r("obfuscation"), "dynamic_import": _r("obfuscation"),
    "module_reach": _r("import_tricks"),
}


# -- the vocabulary of the fact collection (`evo.audit.index`): what the module_state facts look for ------
# Values that make a module-level name a mutable object whose use inside functions is watched.
MUTABLE_FACTORIES = frozenset({
    "builtins.dict", "builtins.list", "builtins.set", "builtins.bytearray", "builtins.iter", "builtins.object",
    "builtins.globals", "builtins.vars", "types.SimpleNamespace", "array.array", "itertools.count",
    "itertools.cycle", "weakref.WeakKeyDictionary", "weakref.WeakValueDictionary", "weakref.WeakSet",
})
MUTABLE_MODULES = ("collections.", "queue.", "multiprocessing.", "threading.")
TENSOR_FACTORIES = frozenset({
    "empty", "zeros", "ones", "full", "tensor", "as_tensor", "randn", "rand", "randint", "arange", "linspace",
    "eye", "empty_like", "zeros_like", "ones_like", "full_like", "empty_strided", "from_numpy", "frombuffer",
    "array", "asarray", "ndarray",
})
# Uses of a module-level mutable object inside a function that only read it.
READ_METHODS = frozenset({"get", "keys", "values", "items", "copy", "index", "count", "__contains__",
                          "__len__", "__getitem__", "shape", "dtype", "device", "size", "stride", "numel",
                          "dim", "ndim", "to", "clone", "float", "half", "bfloat16", "contiguous", "view",
                          "reshape", "T", "item", "tolist", "cpu", "cuda"})
READ_ONLY_CALLS = frozenset({f"builtins.{n}" for n in (
    "len", "sorted", "tuple", "list", "set", "frozenset", "dict", "min", "max", "sum", "any", "all",
    "enumerate", "zip", "reversed", "isinstance", "print", "repr", "str", "bool", "int", "float", "hash",
    "range", "format", "round", "abs", "map", "filter")})
PURE_LIBRARIES = ("numpy.", "math.", "torch.", "triton.cdiv", "triton.next_power_of_2", "triton.language.")
MUTATOR_METHODS = frozenset({
    "append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "setdefault", "add",
    "discard", "appendleft", "extendleft", "popleft", "rotate", "put", "put_nowait", "sort", "reverse",
    "__setitem__", "__delitem__", "__setattr__", "__delattr__", "intersection_update", "difference_update",
    "symmetric_difference_update", "fill", "resize", "itemset", "write", "writelines", "send", "move_to_end",
})
INIT_METHODS = frozenset({"__init__", "__new__", "__post_init__", "__init_subclass__", "__set_name__"})
META_ATTRS = frozenset({"shape", "dtype", "device", "stride", "size", "numel", "dim", "ndim", "ndimension",
                        "element_size", "is_contiguous", "is_cuda", "layout", "nbytes", "itemsize", "T"})
KEY_ATTRS = frozenset({"data_ptr", "tobytes", "item", "tolist", "untyped_storage", "storage", "_cdata",
                       "numpy", "storage_offset", "__array_interface__", "__cuda_array_interface__"})
KEY_CALLS = frozenset({"builtins.id", "builtins.hash"})
KEY_TEXT = re.compile(r"\.(data_ptr|tobytes|item|tolist|untyped_storage|storage|numpy|storage_offset)\b|_cdata|"
                      r"__array_interface__|__cuda_array_interface__|\bid\b|\bhash\b|hashlib")
CACHE_DECORATORS = frozenset({"functools.cache", "functools.lru_cache", "functools.cached_property"})
# Builtins that build a name at run time: loaded as a value rather than called (`reduce(getattr, ...)`).
NAME_BUILDERS = frozenset({"builtins.getattr", "builtins.setattr", "builtins.delattr", "builtins.__import__",
                           "builtins.vars"})
JIT_DECORATORS = ("triton.jit", "triton.autotune", "triton.heuristics", "triton.language.jit")


PURE_DEVICE_QUERIES = ("torch.cuda.get_device_properties", "torch.cuda.get_device_capability",
                       "torch.cuda.current_device", "torch.cuda.device_count", "torch.cuda.is_available",
                       "torch.version", "torch.float", "torch.bfloat16", "torch.half", "torch.int", "torch.uint",
                       "torch.dtype", "torch.finfo", "torch.iinfo", "triton.runtime.driver.active.get_current_device",
                       "triton.runtime.driver.active.utils.get_device_properties")


STOPS: dict[str, str] = {
    "threads": "a thread that finishes the work after the timer stops",
    "processes": "subprocesses (nvcc, nvidia-smi clock changes, daemons)",
    "network": "sockets and HTTP: fetching answers, leaking shapes",
    "ctypes": "raw memory and driver calls through ctypes/cffi",
    "gc": "walking the heap for the harness's expected outputs",
    "inspect": "reading the harness's frames and source with inspect",
    "frame_walking": "sys._getframe / f_back peeking at the harness",
    "import_tricks": "sitecustomize/.pth, import hooks, sys.modules, builtins tampering",
    "monkeypatching": "patched timers, patched torch.allclose, patched harness",
    "precision_flags": "TF32 / reduced-precision flags, autocast",
    "l2_persistence": "persisting-L2 access policy windows",
    "native_code": "load_inline, cupy.RawKernel, numba, torch.compile at evaluation time",
    "side_streams": "side-stream escape from the timer, device switching",
    "cuda_graphs": "graph replay into a reused output buffer",
    "tensor_subclass": "lazy outputs (tensor subclasses, __class__ swaps)",
    "dispatch_override": "__torch_function__/__torch_dispatch__/torch.library overrides",
    "fallback": "try/except fallback to a torch computation",
    "reference": "importing or reading the reference or the harness",
    "module_state": "output caches (pointer or content keyed), call counters, warm-up detectors",
    "environment": "os.environ tampering (NVIDIA_TF32_OVERRIDE, TRITON_*, EVO_*)",
    "dynamic_code": "exec of an encoded payload, eval, unpickling",
    "sleep_and_clock": "sleeps, busy-waits and clock-based warm-up detection",
    "signals": "signal handlers, atexit and finalizers doing work later",
    "file_writes": "files that carry state across evaluations, .pth drops, torch.py shadows",
    "file_reads": "reading the reference, cached outputs or harness files from disk",
    "obfuscation": "computed getattr names and decoded payloads hiding a call",
    "entry_point": "a candidate with no run() to measure",
    "syntax": "a candidate that does not parse",
    "kernel_provenance": "a torch-only run() archived as a kernel solution",
}

SCREEN_CHECK_NAMES = ("syntax", "entry_point", "threads", "processes", "network", "ctypes", "gc", "inspect",
                      "frame_walking", "import_tricks", "monkeypatching", "precision_flags", "l2_persistence",
                      "native_code", "side_streams", "cuda_graphs", "tensor_subclass", "dispatch_override",
                      "fallback", "reference", "module_state", "environment", "dynamic_code", "sleep_and_clock",
                      "signals", "file_writes", "file_reads", "obfuscation")
