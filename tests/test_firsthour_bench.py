"""The README's benchmark command without matplotlib (issue 17): tables, JSON and markdown, and one line
saying that plots need the extra; no traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.test_bench_cli import FAST, _cmd, voxws_server


def test_ttfb_without_matplotlib_writes_json_and_markdown_and_says_so_in_one_line(tmp_path: Path) -> None:
    # A matplotlib that fails to import exactly as a missing one does, first on the path.
    block = tmp_path / "no-matplotlib" / "matplotlib"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'matplotlib'\", "
                                       "name='matplotlib')\n")
    out = tmp_path / "out"
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(
        [str(block.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with voxws_server(tmp_path, **FAST) as url:
        r = subprocess.run([*_cmd("voxws-bench", "voxws.bench"), "ttfb", "--url", url, "--concurrency", "1,2",
                            "--rounds", "1", "--out", str(out), "-q"], capture_output=True, text=True, timeout=180,
                           env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "TTFB" in r.stdout
    notes = [line for line in r.stderr.splitlines() if "matplotlib" in line and not line.startswith("wrote ")]
    assert len(notes) == 1 and notes[0].startswith("plots skipped: they need matplotlib") and "[bench]" in notes[0]
    assert json.loads((out / "ttfb.json").read_text())["scenario"] == "ttfb"
    md = (out / "ttfb.md").read_text()
    assert "| concurrency | requests | success |" in md and ".png" not in md
    assert not list(out.glob("*.png"))
