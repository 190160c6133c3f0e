"""A kernel search through the Ray backend on one GPU against the local backend, on the same task for the same
time: evaluations per minute of each and their ratio (issue 15 asks Ray for >= 90% of local).

Each backend runs one `evo run` (the non-LLM operators, the same seed, the same workers) for `--seconds`; its
rate is counted over the steady window, from its first finished evaluation (the harness's start, the
reference's timing and, on Ray, the actor's start and GPU probe left out) to the end. The local run goes
first, then Ray on a Ray started here with this machine's GPU.

    python3 benchmarks/ray_vs_local.py                           # rmsnorm_fwd, 150 s each, 4 workers
    python3 benchmarks/ray_vs_local.py --task kernels/softmax_fwd --seconds 100 --json out.json

Ray missing (a machine with only torch and triton): `--ray-wheels DIR` puts the wheels of DIR, unzipped, on
the path of this process and of Ray's workers. Build DIR where a package index answers, for the machine's
Python: `python3 benchmarks/ray_vs_local.py --make-wheels DIR --python-version 3.12`: Ray's wheel slimmed to
what a driver, its actors and `ray start` use (75.6 MiB -> 23 MiB: no Java jars, no Ray libraries such as
rllib or serve, no dashboard web page, the binaries' symbols stripped, LZMA), and only the dependencies the GPU
machines lack (jsonschema and its own: 0.5 MiB; `--all-deps` for a machine without requests, protobuf, ...).
`--ray-wheels DIR --smoke` checks them in a few seconds (a local Ray, an actor, runtime_env env_vars) and stops.
Prints a table; `--json PATH` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RAY_VERSION = "2.60.0"
# Ray's own requirements that the GPU machines lack (they have click, filelock, msgpack, packaging, protobuf,
# pyyaml, requests and what those need): only these travel beside Ray's wheel. `--all-deps` takes every one.
RAY_DEPS_MISSING = ("jsonschema", "referencing", "rpds-py", "jsonschema-specifications")
RAY_DEPS = (*RAY_DEPS_MISSING, "msgpack", "attrs", "protobuf", "pyyaml", "requests", "urllib3", "idna",
            "charset-normalizer", "certifi", "filelock", "packaging", "click")
# What a Python driver, its actors (runtime_env env_vars, py_modules) and `ray start` never import: Ray's
# libraries on top of its core, the Java worker, the dashboard's web page (its Python stays: `ray start` may
# run the dashboard and runs its agents on every node), Cython headers. Checked by `--check-wheel`.
STRIPPED = ("ray/jars/", "ray/rllib/", "ray/data/", "ray/serve/", "ray/llm/", "ray/train/", "ray/tune/",
            "ray/air/", "ray/workflow/", "ray/dashboard/client/build/", "ray/includes/", "ray/_raylet.pxd",
            "ray/_raylet.pyi")
ELF = b"\x7fELF"


def _strip_symbols(data: bytes) -> bytes:
    """An ELF file without its symbol tables (what a debugger reads, not the loader): Ray's three binaries
    are 110 MiB of which 30 are symbols. Unchanged where `strip` is missing or fails."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "elf"
        path.write_bytes(data)
        try:
            subprocess.run(["strip", "--strip-unneeded", str(path)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return data
        return path.read_bytes()


def slim_wheel(wheel: Path) -> None:
    """Rewrite Ray's wheel in place: the parts in `STRIPPED` left out, the binaries' symbols stripped, and the
    whole compressed with LZMA (Python's zipfile, hence pip, reads it); RECORD rewritten to match."""
    import base64
    import hashlib

    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_LZMA) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        record: list[str] = []
        for item in src.infolist():
            name = item.filename
            if name == record_name or name.startswith(STRIPPED):
                continue
            data = src.read(item)
            if data[:4] == ELF:
                data = _strip_symbols(data)
            out = zipfile.ZipInfo(name, date_time=item.date_time)
            out.external_attr = item.external_attr  # the binaries' execute bits
            out.compress_type = zipfile.ZIP_LZMA
            dst.writestr(out, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append(f"{record_name},,")
        dst.writestr(record_name, "\n".join(record) + "\n")
    slim.replace(wheel)


def make_wheels(folder: Path, python_version: str, all_deps: bool = False) -> None:
    """Download Ray for `python_version` on manylinux x86_64, slimmed (`slim_wheel`), and the dependencies the
    GPU machines lack (`all_deps`: every one)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", python_version,
            "--implementation", "cp", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
            "-d", str(folder)]
    subprocess.run([*base, "--no-deps", f"ray=={RAY_VERSION}"], check=True)
    subprocess.run([*base, "--no-deps", *(RAY_DEPS if all_deps else RAY_DEPS_MISSING)], check=True)
    for wheel in folder.glob("ray-*.whl"):
        before = wheel.stat().st_size
        slim_wheel(wheel)
        print(f"{wheel.name}: {before / 2**20:.1f} MiB -> {wheel.stat().st_size / 2**20:.1f} MiB")
    total = sum(p.stat().st_size for p in folder.glob("*.whl"))
    print(f"{folder}: {len(list(folder.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB")


def use_wheels(folder: Path) -> None:
    """Unzip the wheels of `folder` into a temporary site folder, on this process's path and its children's."""
    site = Path(tempfile.mkdtemp(prefix="evo-ray-site-"))
    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            for item in z.infolist():
                path = Path(z.extract(item, site))
                mode = item.external_attr >> 16
                if mode & 0o111 or path.parent.name in ("gcs", "raylet"):  # Ray's binaries (raylet, gcs) must run
                    path.chmod(0o755)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(REPO), os.environ.get("PYTHONPATH")]))


def smoke() -> None:
    """A local Ray of one CPU, an actor on it with an environment variable through its runtime_env: what the Ray
    backend needs of an install (a missing piece of a slimmed wheel fails here, in seconds)."""
    import ray

    start = time.monotonic()
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        class Probe:
            def env(self, name: str) -> str | None:
                return os.environ.get(name)

        actor = ray.remote(num_cpus=1)(Probe).options(runtime_env={"env_vars": {"EVO_SMOKE": "yes"}}).remote()
        got = ray.get(actor.env.remote("EVO_SMOKE"), timeout=120)
    finally:
        ray.shutdown()
    if got != "yes":
        sys.exit(f"Ray from {ray.__file__}: the actor saw EVO_SMOKE={got!r}, not 'yes'")
    print(f"Ray {ray.__version__} from {Path(ray.__file__).parent}: a local Ray, an actor and its runtime_env work "
          f"({time.monotonic() - start:.1f} s)")


def run_one(backend: str, task: str, seconds: float, workers: int, seed: int, folder: Path) -> dict[str, Any]:
    """One search of `seconds` on `backend`; its evaluations and rates."""
    from evo.config import RunConfig
    from evo.engine import Engine

    config = RunConfig(task=task, budget=100_000, workers=workers, seed=seed, backend=backend,
                       time_limit_s=seconds, operators={"params": 4.0, "constants": 1.0})
    built = time.monotonic()
    engine = Engine.create(folder / backend, config)
    ticks: list[tuple[float, int]] = []
    start = time.monotonic()
    stats = engine.run(on_tick=lambda s: ticks.append((time.monotonic(), s.done)))
    end = time.monotonic()
    first = next(((t, d) for t, d in ticks if d > 0), (end, 0))
    steady = (stats.done - first[1]) / max(end - first[0], 1e-9) * 60
    return {"backend": backend, "done": stats.done, "failures": dict(stats.failures), "seconds": end - start,
            "setup_s": start - built, "first_eval_s": first[0] - start, "per_minute_total":
            stats.done / (end - start) * 60, "per_minute_steady": steady,
            "best": stats.best_score}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="kernels/rmsnorm_fwd")
    ap.add_argument("--seconds", type=float, default=150.0, help="search time of each backend")
    ap.add_argument("--workers", type=int, default=4, help="evaluations in flight (the GPU actor's slots: 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", default="local,ray")
    ap.add_argument("--ray-wheels", type=Path, help="a folder of wheels (Ray and its dependencies) to use")
    ap.add_argument("--make-wheels", type=Path, help="build that folder here, then stop")
    ap.add_argument("--python-version", default="3.12", help="for --make-wheels")
    ap.add_argument("--all-deps", action="store_true", help="for --make-wheels: every dependency of Ray, not "
                    "only those the GPU machines lack")
    ap.add_argument("--smoke", action="store_true", help="check Ray (with --ray-wheels: those wheels) on a local "
                    "Ray in a few seconds, then stop")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if args.make_wheels:
        make_wheels(args.make_wheels, args.python_version, args.all_deps)
        return
    if args.ray_wheels:
        use_wheels(args.ray_wheels)
    if args.smoke:
        smoke()
        return
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "ray" in backends:
        try:
            import ray  # noqa: F401
        except ImportError:
            sys.exit("Ray is not installed here: pip install 'evo[cluster]', or pass --ray-wheels DIR (see --help)")
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (Triton's interpreter)"
    rows = []
    with tempfile.TemporaryDirectory(prefix="evo-ray-vs-local-") as tmp:
        for backend in backends:
            rows.append(run_one(backend, args.task, args.seconds, args.workers, args.seed, Path(tmp)))
            print(f"{backend}: {rows[-1]['done']} evaluations in {rows[-1]['seconds']:.0f} s", flush=True)
    rates = {r["backend"]: r["per_minute_steady"] for r in rows}
    ratio = rates["ray"] / rates["local"] if rates.get("local") and "ray" in rates else None
    print(f"\n{args.task} on {device}, {args.workers} workers, {args.seconds:g} s each")
    print(f"{'backend':8} {'evals':>6} {'first eval s':>12} {'evals/min (steady)':>19} {'evals/min (all)':>16}")
    for r in rows:
        print(f"{r['backend']:8} {r['done']:6d} {r['first_eval_s']:12.1f} {r['per_minute_steady']:19.1f} "
              f"{r['per_minute_total']:16.1f}")
    if ratio is not None:
        print(f"ray / local (steady evaluations per minute): {ratio:.3f}  (target >= 0.90)")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"task": args.task, "device": device, "workers": args.workers,
                                         "seconds": args.seconds, "ratio": ratio, "runs": rows, "commit": commit,
                                         "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")},
                                        indent=2))


if __name__ == "__main__":
    main()
