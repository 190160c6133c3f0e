"""expect: runs
Writes a passing answer with fast times into the worker's answer file and leaves before the judge asks.
"""

import json
import os

for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if "result-" in target and target.endswith(".json"):
        checks = [[n, True, ""] for n in ("dynamic:stale_memory", "dynamic:time_bound", "dynamic:timed_outputs")]
        os.write(int(fd), json.dumps({"status": "ok", "device_name": "cpu", "result": {
            "workloads": {}, "checks": checks}}).encode())
        os._exit(0)


def run(x, weight):
    return x
