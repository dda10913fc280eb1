"""docs/agents.md: each framework's complete minimal example runs as written against `voxws serve`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from tests.conftest import ROOT, serve_process

DOC = (ROOT / "docs" / "agents.md").read_text()


def example(tag: str) -> str:
    m = re.search(rf"```python {tag}\n(.*?)```", DOC, re.S)
    assert m, f"no `python {tag}` example in docs/agents.md"
    return m.group(1)


@pytest.mark.parametrize(("tag", "module", "wav"), [("pipecat", "pipecat", "pipecat.wav"),
                                                     ("livekit", "livekit.agents", "livekit.wav")])
def test_minimal_example_runs(tmp_path: Path, tag: str, module: str, wav: str) -> None:
    pytest.importorskip(module)
    with serve_process() as (_proc, port):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TTS_URL": f"ws://127.0.0.1:{port}/v1/tts"}
        out = subprocess.run([sys.executable, "-c", example(tag)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    with wave.open(str(tmp_path / wav)) as w:
        assert w.getframerate() == 24000
        assert w.getnframes() > 24000  # over a second of speech
