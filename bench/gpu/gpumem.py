"""Card memory as nvidia-smi reports it (the whole card: engine workers, CUDA graphs, allocator).

As a library: `with Sampler() as s: ...; s.peak_mb` samples every 250 ms in one long-lived
nvidia-smi process (no process spawn per sample, so the measured loop is not disturbed).
As a script: `python gpumem.py` prints one JSON line per sample until killed;
`python gpumem.py --peak FILE` reads such a file and prints the peak per GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

QUERY = ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"]


def cards() -> list[dict]:
    """Name, total memory and driver of every card nvidia-smi sees."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True, check=True).stdout
    rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines()]
    return [{"index": int(r[0]), "name": r[1], "memory_total_mb": int(float(r[2])), "driver": r[3]} for r in rows]


def used_mb() -> dict[int, int]:
    out = subprocess.run(QUERY, capture_output=True, text=True, check=True).stdout
    return {int(a): int(float(b)) for a, b in (line.split(",") for line in out.strip().splitlines())}


class Sampler:
    def __init__(self, interval_ms: int = 250):
        self.interval_ms = interval_ms
        self.peak: dict[int, int] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self.peak = dict(used_mb())
        self._proc = subprocess.Popen([*QUERY, f"-lms={self.interval_ms}"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                idx, mb = (int(float(x)) for x in line.split(","))
            except ValueError:
                continue
            self.peak[idx] = max(self.peak.get(idx, 0), mb)

    def __exit__(self, *exc: object) -> None:
        for idx, mb in used_mb().items():
            self.peak[idx] = max(self.peak.get(idx, 0), mb)
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)
        if self._thread is not None:
            self._thread.join(2)

    @property
    def peak_mb(self) -> int:
        return max(self.peak.values(), default=0)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--peak":
        peak: dict[str, int] = {}
        with open(sys.argv[2]) as f:
            for line in f:
                try:
                    for k, v in json.loads(line)["used_mb"].items():
                        peak[k] = max(peak.get(k, 0), v)
                except (ValueError, KeyError):
                    continue
        print(json.dumps(peak))
        return
    while True:  # until killed
        print(json.dumps({"t": time.time(), "used_mb": used_mb()}), flush=True)
        time.sleep(0.25)


if __name__ == "__main__":
    main()
