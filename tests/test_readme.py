"""The README's promises: its client example works against `voxws serve`, its table is complete."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, serve_process
from voxws.config import FIELDS

README = (ROOT / "README.md").read_text()


def test_python_example_speaks_68_chars_with_14112_byte_frames(tmp_path: Path) -> None:
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)  # type: ignore[union-attr]
    text = re.search(r'"text": "([^"]+)"', code).group(1)  # type: ignore[union-attr]
    assert len(text) == 68
    with serve_process() as (_proc, port):
        code = code.replace("ws://127.0.0.1:8081/", f"ws://127.0.0.1:{port}/")
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    first, done_line = out.stdout.strip().splitlines()
    assert first == "ready"
    done = json.loads(done_line)
    pcm = (tmp_path / "out.raw").read_bytes()
    assert done["type"] == "done" and done["text_chars"] == 68
    assert len(pcm) == done["chunks"] * 14112
    assert done["audio_ms"] == int(len(pcm) / 2 / 44100 * 1000)


def test_every_setting_is_in_the_readme_table() -> None:
    missing = [f.env for f in FIELDS if f"`{f.env}`" not in README]
    assert not missing


def test_bad_setting_exits_before_the_engine_loads() -> None:
    env = {**os.environ, "VOXWS_ENGINE": "synthetic", "VOXCPM_GPU_MEMORY_UTILIZATION": "0.3", "VOXWS_PORT": "99999"}
    out = subprocess.run([str(Path(sys.executable).with_name("voxws")), "serve"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2
    assert "VOXCPM_GPU_MEMORY_UTILIZATION=0.3: must be a number from 0.4 to 0.95" in out.stderr
    assert "VOXWS_PORT=99999: must be an integer from 1 to 65535" in out.stderr
    assert "listening" not in out.stdout
