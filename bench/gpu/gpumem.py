"""Card memory as nvidia-smi reports it (the whole card: engine workers, CUDA graphs, allocator).

Read once after each burst, never polled during one: nvidia-smi queries take driver locks and
can stall kernel launches, and the engine's caching allocator never hands memory back, so the
reading after a burst is that burst's high-water mark.

    python gpumem.py            # {"<index>": used MiB, ...} for every card, one JSON line
"""

from __future__ import annotations

import json
import subprocess


def cards() -> list[dict]:
    """Name, total memory and driver of every card nvidia-smi sees."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True, check=True).stdout
    rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines()]
    return [{"index": int(r[0]), "name": r[1], "memory_total_mb": int(float(r[2])), "driver": r[3]}
            for r in rows]


def used_mb() -> dict[int, int]:
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return {int(a): int(float(b)) for a, b in (line.split(",") for line in out.strip().splitlines())}


if __name__ == "__main__":
    print(json.dumps(used_mb()))
