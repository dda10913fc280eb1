"""The voice store on disk: what a voice holds, atomic writes (a crash leaves nothing), one winner for one
id across processes, max_voices, sharing between processes, the latents cache, every format, bad input."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.audiofiles import FORMATS, encode, speechlike
from voxws import voices
from voxws.voices import VoiceError, VoiceStore, default_voices_dir

TEXT = "what I said in it"
CTX = mp.get_context("spawn")  # a fresh interpreter: a real second process, as a second server group is


def wav(seconds: float, rate: int = 44100, channels: int = 1, **kw: float) -> bytes:
    return encode("wav", speechlike(seconds, rate, channels, **kw), rate)


def internal(root: Path) -> list[str]:
    """Entries that are not voices (temp dirs, leftovers), the lock file aside."""
    return sorted(p.name for p in root.iterdir() if p.name != voices.LOCK and not voices.valid_id(p.name))


def test_a_voice_holds_the_trimmed_recording_and_its_transcript(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path)
    v = store.add(wav(3.0, 48000, 2, lead_silence_s=1.0, tail_silence_s=2.0), f"  {TEXT} ", name="Me",
                  voice_id="me")
    assert v.to_json() == {"id": "me", "name": "Me", "text": TEXT, "duration_s": v.duration_s, "created": v.created}
    assert abs(v.duration_s - 3.2) < 0.05  # 3 s of sound + 100 ms kept on each side
    assert v.created.endswith("Z") and v.created[:4].isdigit()
    pcm = v.audio()
    assert pcm.dtype == np.float32 and abs(len(pcm) / 44100 - v.duration_s) < 0.001
    with wave.open(str(tmp_path / "me/audio.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (44100, 1, 2)
    assert json.loads((tmp_path / "me/meta.json").read_text())["text"] == TEXT
    assert store.get("me") == v and store.list() == [v]
    server_made = store.add(wav(2.0), TEXT)
    assert voices.valid_id(server_made.id) and server_made.name == server_made.id
    assert {x.id for x in VoiceStore(tmp_path).list()} == {"me", server_made.id}  # survives a "restart"
    assert store.delete("me") is True and store.delete("me") is False
    assert store.get("me") is None and [x.id for x in store.list()] == [server_made.id]
    assert not (tmp_path / "me").exists() and internal(tmp_path) == []


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize(("rate", "channels"), [(44100, 1), (48000, 2), (16000, 1)])
def test_every_upload_format_decodes(tmp_path: Path, fmt: str, rate: int, channels: int) -> None:
    data = encode(fmt, speechlike(3.0, rate, channels, lead_silence_s=0.5, tail_silence_s=0.5), rate)
    v = VoiceStore(tmp_path).add(data, TEXT, voice_id=f"v-{fmt}")
    assert abs(v.duration_s - 3.2) < 0.1, v.duration_s
    pcm = v.audio()
    # The 180 Hz voice survives decoding, mixing down and resampling.
    spectrum = np.abs(np.fft.rfft(pcm))
    assert abs(np.argmax(spectrum) * 44100 / len(pcm) - 180) < 3


@pytest.mark.parametrize(("make", "code"), [
    (lambda: b"", "bad_audio"),
    (lambda: b"\x00\x01garbage" * 100, "bad_audio"),
    (lambda: b"RIFF\x10\x00\x00\x00WAVEfmt " + os.urandom(200), "bad_audio"),  # a WAV header, then noise
    (lambda: wav(3.0)[:60], "bad_audio"),  # truncated just past the header: no audio
    (lambda: b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", "bad_audio"),  # FFmpeg never sees a playlist
    (lambda: b"ffconcat version 1.0\nfile /etc/passwd\n", "bad_audio"),
    (lambda: wav(0.5), "audio_too_short"),
    (lambda: encode("wav", np.zeros((1, 44100 * 5), np.float32), 44100), "audio_too_short"),  # silence only
    (lambda: encode("wav", speechlike(300, 8000), 8000), "audio_too_long"),  # 5 minutes
    (lambda: wav(31.0), "audio_too_long"),
])
def test_bad_recordings_are_refused_and_nothing_is_stored(tmp_path: Path, make, code: str) -> None:
    store = VoiceStore(tmp_path)
    with pytest.raises(VoiceError) as e:
        store.add(make(), TEXT, voice_id="x")
    assert (e.value.code, e.value.status) == (code, 400), e.value.message
    assert store.list() == [] and internal(tmp_path) == [] and not (tmp_path / "x").exists()


def test_silence_is_trimmed_before_the_length_check(tmp_path: Path) -> None:
    # 0.9 s of sound in 10 s of recording is too short; 29 s of sound with 5 s of silence is fine.
    store = VoiceStore(tmp_path)
    with pytest.raises(VoiceError) as e:
        store.add(wav(0.7, lead_silence_s=5, tail_silence_s=4.3), TEXT)
    assert e.value.code == "audio_too_short"
    assert 29 < store.add(wav(29.0, lead_silence_s=3, tail_silence_s=2), TEXT).duration_s < 29.5


def test_bad_fields_are_refused(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, max_voices=1)
    audio = wav(2.0)
    for text in (None, "", "   \n"):
        with pytest.raises(VoiceError) as e:
            store.add(audio, text)
        assert (e.value.code, e.value.status) == ("missing_text", 400)
    for bad_id in ("", ".", "..", "a/b", "a b", "ü", "x" * 65, "../../etc", "a\x00"):
        with pytest.raises(VoiceError) as e:
            store.add(audio, TEXT, voice_id=bad_id or None) if bad_id else voices.check_id(bad_id)
        assert (e.value.code, e.value.status) == ("bad_request", 400), bad_id
    with pytest.raises(VoiceError) as e:
        store.add(audio, TEXT, name="bad\x07name")
    assert e.value.code == "bad_request"
    store.add(audio, TEXT, voice_id="a")
    with pytest.raises(VoiceError) as e:
        store.add(audio, TEXT, voice_id="a")
    assert (e.value.code, e.value.status) == ("voice_exists", 409)
    with pytest.raises(VoiceError) as e:
        store.add(audio, TEXT, voice_id="b")
    assert (e.value.code, e.value.status) == ("too_many_voices", 409)
    assert [v.id for v in store.list()] == ["a"] and internal(tmp_path) == []


# -- crashes and processes ------------------------------------------------------------------------

def _crash_mid_write(root: str, audio: bytes) -> None:
    VoiceStore(root).add(audio, TEXT, voice_id="half", _crash_before_commit=True)


def test_a_crash_mid_write_leaves_no_voice_and_is_cleaned_on_open(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path)
    p = CTX.Process(target=_crash_mid_write, args=(str(tmp_path), wav(2.0)))
    p.start()
    p.join(60)
    assert p.exitcode == 17  # died after writing every file, before the rename
    left = internal(tmp_path)
    assert any(n.startswith("~tmp-") and not n.endswith(".lock") for n in left)
    assert (tmp_path / left[0] / "audio.wav").exists()  # the whole voice was there, just not committed
    assert store.get("half") is None and store.list() == []
    VoiceStore(tmp_path)  # a server (re)starting
    assert internal(tmp_path) == []


def test_cleaning_spares_a_live_writer_and_removes_half_deletions(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path)
    token, fd = store._writer_lock()
    (tmp_path / f"~tmp-{token}").mkdir()
    (tmp_path / "~del-0123").mkdir()
    (tmp_path / "~del-0123/audio.wav").write_bytes(b"x")
    try:
        VoiceStore(tmp_path)
        assert internal(tmp_path) == [f"~tmp-{token}", f"~tmp-{token}.lock"]
    finally:
        os.close(fd)
    VoiceStore(tmp_path)  # the writer is gone now
    assert internal(tmp_path) == []


def _add_at(root: str, voice_id: str, start: float, audio: bytes, max_voices: int, out: mp.Queue) -> None:
    store = VoiceStore(root, max_voices=max_voices)
    while time.time() < start:
        time.sleep(0.0005)
    try:
        out.put((voice_id, store.add(audio, TEXT, voice_id=voice_id).id))
    except VoiceError as e:
        out.put((voice_id, e.code))


def _race(root: Path, ids: list[str], max_voices: int = 1000) -> list[tuple[str, str]]:
    out: mp.Queue = CTX.Queue()
    start = time.time() + 2.0  # every process has decoded by then; they commit at about the same moment
    audio = wav(2.0)
    procs = [CTX.Process(target=_add_at, args=(str(root), i, start, audio, max_voices, out)) for i in ids]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
    return results


def test_two_processes_adding_one_id_one_wins(tmp_path: Path) -> None:
    for round_ in range(2):
        vid = f"same{round_}"
        codes = sorted(code for _, code in _race(tmp_path, [vid, vid]))
        assert codes == [vid, "voice_exists"]
    assert internal(tmp_path) == []


def test_max_voices_holds_across_processes(tmp_path: Path) -> None:
    VoiceStore(tmp_path).add(wav(2.0), TEXT, voice_id="first")
    results = dict(_race(tmp_path, ["a", "b", "c"], max_voices=2))
    assert sorted(results.values()).count("too_many_voices") == 2
    assert len(VoiceStore(tmp_path).list()) == 2 and internal(tmp_path) == []


def _add_one(root: str, voice_id: str, audio: bytes) -> None:
    VoiceStore(root).add(audio, TEXT, voice_id=voice_id)


def test_a_voice_added_by_another_process_is_seen_within_2_s(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path)
    assert store.list() == []  # the scan is cached from here
    p = CTX.Process(target=_add_one, args=(str(tmp_path), "shared", wav(2.0)))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    seen_at = time.monotonic()
    while [v.id for v in store.list()] != ["shared"]:
        assert time.monotonic() - seen_at < 2.0, "not visible within 2 s"
        time.sleep(0.05)
    assert store.get("shared") is not None
    VoiceStore(tmp_path).delete("shared")
    while store.list():
        assert time.monotonic() - seen_at < 4.0
        time.sleep(0.05)


def test_latents_cache_is_per_model_and_atomic(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, model_key="voxcpm1.5-abc")
    v = store.add(wav(2.0), TEXT, voice_id="me")
    assert v.cached("latents") is None
    v.store_cached("latents", None, b"\x01" * 256)
    assert v.cached("latents") == b"\x01" * 256 == v.cached("latents", "voxcpm1.5-abc")
    assert v.cached("latents", "voxcpm1.5-other") is None  # a model change re-derives
    assert (tmp_path / "me/cache/voxcpm1.5-abc/latents").exists()
    assert not [p for p in (tmp_path / "me/cache/voxcpm1.5-abc").iterdir() if p.name.startswith("~")]
    for bad in ("../x", "..", "a/b"):
        with pytest.raises(ValueError):
            v.cached("latents", bad)
    for bad in ("../x", "", "a/b"):
        with pytest.raises(ValueError):
            v.store_cached(bad, "k", b"")
    store.delete("me")
    v.store_cached("latents", None, b"late")  # the voice was removed meanwhile: no error, nothing written
    assert v.cached("latents") is None and not (tmp_path / "me").exists()
    with pytest.raises(VoiceError) as e:
        v.audio()
    assert e.value.code == "unknown_voice"


def test_default_dir() -> None:
    assert default_voices_dir({"STATE_DIRECTORY": "/var/lib/voxcpm:/var/lib/voxcpm/voices"}) == Path(
        "/var/lib/voxcpm/voices")
    assert default_voices_dir({"HOME": "/home/u"}) == Path("/home/u/.local/share/voxws/voices")
    assert default_voices_dir({"XDG_DATA_HOME": "/d"}) == Path("/d/voxws/voices")


def test_model_key_changes_with_the_model(tmp_path: Path) -> None:
    assert voices.model_key("synthetic") == "synthetic"
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    k = voices.model_key("nanovllm", str(tmp_path))
    assert k.startswith("nanovllm-") and k == voices.model_key("nanovllm", str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"y" * 11)
    assert voices.model_key("nanovllm", str(tmp_path)) != k
    VoiceStore(tmp_path / "v", model_key=k)  # a valid key
