"""`voxws say`: the terminal way to hear a server (issue 17 item 9: instead of a hex-flooding
`python -m websockets`), writing a WAV file a player opens."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

from tests.conftest import serve_process

VOXWS = str(Path(sys.executable).with_name("voxws"))


def test_say_writes_a_wav_file_with_the_audio_the_server_sent(tmp_path: Path) -> None:
    with serve_process() as (_proc, port):
        url = f"ws://127.0.0.1:{port}/v1/tts"
        r = subprocess.run([VOXWS, "say", "你好，世界。", "--out", str(tmp_path / "a.wav"), "--url", url],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        r8 = subprocess.run([VOXWS, "say", "-", "-o", str(tmp_path / "b.raw"), "--url", url, "--sample-rate", "8000"],
                            input="你好", capture_output=True, text=True, timeout=60)
        assert r8.returncode == 0, r8.stderr
    with wave.open(str(tmp_path / "a.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 44100)
        assert w.getnframes() > 0 and w.getnframes() % 7056 == 0  # whole 0.16 s chunks
    assert r.stdout.startswith(f"wrote {tmp_path / 'a.wav'}: ") and "at 44100 Hz" in r.stdout
    raw = (tmp_path / "b.raw").read_bytes()
    assert len(raw) > 0 and len(raw) % 2 == 0 and "at 8000 Hz" in r8.stdout


def test_say_refusals_are_one_line() -> None:
    r = subprocess.run([VOXWS, "say", "x", "-o", "x.wav", "--sample-rate", "44000", "--url", "http://h/"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "voxws: --url=http://h/: must start with ws:// or wss://",
        "voxws: --sample-rate=44000: must be one of 8000, 16000, 22050, 24000, 44100, 48000"]
    r = subprocess.run([VOXWS, "say", "x", "-o", "x.wav", "--url", "ws://127.0.0.1:9/v1/tts"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "cannot reach" in r.stderr
