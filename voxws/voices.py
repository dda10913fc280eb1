"""The voice store: recordings + transcripts on disk, shared by every server process of a host.

Layout under the store's root (VOXWS_VOICES_DIR):

    <root>/<id>/audio.wav          the decoded recording, 16-bit PCM, 44.1 kHz mono: the source of truth
    <root>/<id>/meta.json          {"id","name","text","duration_s","created"}
    <root>/<id>/cache/<model>/<kind>   what an engine derived from it (latents), per model
    <root>/~store.lock             flock held while a voice is committed or removed
    <root>/~tmp-<rand>[.lock]      a voice being written (its writer holds the .lock's flock)
    <root>/~del-<rand>             a voice being removed

Internal names start with "~", which no voice id can contain, so a scan never mistakes one for a voice.

Atomicity: a voice is written into ~tmp-<rand>, fsynced, then renamed to <id> under ~store.lock. A crash
before the rename leaves only a ~tmp dir whose writer's flock died with it; the next store opened on the
root removes it. rename(2) onto a non-empty directory fails, and a voice directory is never empty (it is
made whole before the rename, removed by renaming it away), so an id is taken exactly once; the store lock
makes the existence check, the max_voices count and the rename one step across processes.

Sharing: get() reads the disk every time; list() rescans when the root's mtime changes (a voice added or
removed is a rename in the root) and at least every REVALIDATE_S, so another process's voice shows
within 2 s even on a file system with coarse timestamps.

Decoding (PyAV; FFmpeg is bundled in its wheels): the container is sniffed from its first bytes and the
demuxer forced to it (WAV, FLAC, MP3, AAC/ADTS, Ogg, Matroska/WebM, MP4/M4A), so FFmpeg never probes a
playlist or concat file that could open other files or URLs. Channels are averaged to mono, resampled to
44.1 kHz with soxr, and at most MAX_DECODED_S seconds are decoded (memory stays bounded whatever the
codec's compression). Then silence is trimmed at both ends (see trim_silence) and the rest must last
MIN_S to MAX_S seconds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import string
import time
import wave
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import soxr

RATE = 44100
MIN_S = 1.0
MAX_S = 30.0
# Decoding stops here: a 10 MB Opus file can hold hours, and a recording with a minute of silence
# around it is still refused as too long after this much.
MAX_DECODED_S = 120.0
MAX_TEXT_CHARS = 2000
MAX_NAME_CHARS = 200
ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # cache kinds and model keys: safe single path parts
REVALIDATE_S = 1.0
# Silence trimming (trim_silence): 10 ms frames; a frame is sound when its RMS is within TRIM_RANGE_DB
# of the loudest frame and above TRIM_FLOOR_DBFS; TRIM_PAD_S of audio is kept around the sound.
TRIM_FRAME_S = 0.010
TRIM_RANGE_DB = 40.0
TRIM_FLOOR_DBFS = -60.0
TRIM_PAD_S = 0.100
LOCK = "~store.lock"
TMP = "~tmp-"
DEL = "~del-"
_ID_CHARS = string.ascii_lowercase + string.digits


class VoiceError(Exception):
    """A refusal with a PROTOCOL.md code and the HTTP status that carries it."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


# too_many_voices is 409 like voice_exists: the store's state refuses it, and the client fixes it by
# deleting a voice; 429 would invite a timed retry, and 507 (a 5xx) would page whoever watches errors.
TOO_MANY_VOICES_STATUS = 409


def default_voices_dir(env: Mapping[str, str] | None = None) -> Path:
    """VOXWS_VOICES_DIR when unset: <first $STATE_DIRECTORY>/voices under systemd (the unit says
    StateDirectory=voxcpm voxcpm/voices, so /var/lib/voxcpm/voices), else $XDG_DATA_HOME/voxws/voices
    (~/.local/share/voxws/voices)."""
    env = os.environ if env is None else env
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / "voices"
    data = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/share")
    return Path(data) / "voxws" / "voices"


def model_key(engine: str, model_path: str | None = None) -> str:
    """A cache key that changes when the model does: the engine's name plus a hash of the model directory's
    config.json and the names, sizes and mtimes of its weight files (cheap: nothing large is read)."""
    if not model_path:
        return _check_key("engine", engine)
    d = Path(model_path)
    h = hashlib.sha256()
    with contextlib.suppress(OSError):
        h.update((d / "config.json").read_bytes())
    for p in sorted([*d.glob("*.safetensors"), *d.glob("*.pth"), *d.glob("*.bin")]):
        with contextlib.suppress(OSError):
            st = p.stat()
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return f"{_check_key('engine', engine)}-{h.hexdigest()[:16]}"


def check_id(voice_id: str) -> str:
    if not isinstance(voice_id, str) or not ID_RE.match(voice_id) or voice_id in (".", ".."):
        raise VoiceError("bad_request", "id: must be 1-64 characters of [A-Za-z0-9_.-], not '.' or '..'")
    return voice_id


def valid_id(voice_id: str) -> bool:
    return bool(ID_RE.match(voice_id)) and voice_id not in (".", "..")


def _check_key(what: str, value: str) -> str:
    if not isinstance(value, str) or not KEY_RE.match(value) or value in (".", ".."):
        raise ValueError(f"{what}={value!r}: must be 1-128 characters of [A-Za-z0-9_.-]")
    return value


# -- decoding ---------------------------------------------------------------------------------------

def sniff(head: bytes) -> str | None:
    """FFmpeg demuxer name for the container these first bytes start, or None (not an accepted format)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM (MediaRecorder)
    if head[4:8] == b"ftyp":
        return "mp4"  # mov,mp4,m4a demuxer
    if head[:3] == b"ID3":
        # ID3v2 precedes MP3, sometimes FLAC or ADTS AAC: look past it.
        if len(head) >= 10:
            size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
            inner = sniff(head[10 + size:]) if len(head) > 10 + size + 4 else None
            return inner or "mp3"
        return None
    if len(head) >= 2 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:
            return "aac"  # ADTS
        if head[1] & 0xE0 == 0xE0 and (head[1] >> 1) & 0x3 != 0:
            return "mp3"  # MPEG audio frame sync, layer I-III
    return None


def decode(src: bytes | IO[bytes], max_s: float = MAX_DECODED_S) -> np.ndarray:
    """The recording's audio as float32 mono at 44.1 kHz (at most max_s seconds), or VoiceError bad_audio."""
    import av  # imported here: the store itself (list/get/delete, voxws-ops list) does not need FFmpeg

    f: IO[bytes] = io.BytesIO(src) if isinstance(src, bytes | bytearray) else src
    f.seek(0)
    head = f.read(4096)
    if not head:
        raise VoiceError("bad_audio", "audio: the file is empty")
    fmt = sniff(head)
    if fmt is None:
        raise VoiceError("bad_audio", "audio: not a recognised audio file (WAV, FLAC, MP3, Ogg/Opus, WebM/Opus, "
                                      "M4A)")
    f.seek(0)
    limit = int(max_s * RATE)
    parts: list[np.ndarray] = []
    have = 0
    try:
        with av.open(f, mode="r", format=fmt) as container:
            if not container.streams.audio:
                raise VoiceError("bad_audio", "audio: the file holds no audio stream")
            stream = container.streams.audio[0]
            rs: soxr.ResampleStream | None = None
            rate = 0
            # Planar float whatever the codec gives; channel count and rate stay the source's.
            convert = av.AudioResampler(format="fltp")
            for frame in container.decode(stream):
                for out in convert.resample(frame):
                    x = out.to_ndarray()
                    if x.ndim != 2 or x.shape[1] == 0:
                        continue
                    if out.sample_rate != rate:
                        if rs is not None:
                            parts.append(rs.resample_chunk(np.zeros(0, np.float32), last=True))
                        rate = out.sample_rate
                        if not 1000 <= rate <= 768_000:
                            raise VoiceError("bad_audio", f"audio: unsupported sample rate {rate}")
                        rs = soxr.ResampleStream(rate, RATE, 1, dtype="float32")
                    assert rs is not None
                    y = rs.resample_chunk(np.ascontiguousarray(x.mean(axis=0, dtype=np.float32)))
                    parts.append(y)
                    have += len(y)
                if have > limit:
                    break
            if rs is not None and have <= limit:
                parts.append(rs.resample_chunk(np.zeros(0, np.float32), last=True))
    except VoiceError:
        raise
    except Exception as e:  # FFmpeg errors, truncated files, odd codecs: all the client's file
        raise VoiceError("bad_audio", f"audio: could not be decoded ({type(e).__name__})") from None
    if not parts:
        raise VoiceError("bad_audio", "audio: no audio could be decoded")
    pcm = np.concatenate(parts).astype(np.float32, copy=False)
    if not np.all(np.isfinite(pcm)):
        raise VoiceError("bad_audio", "audio: decoded to non-finite samples")
    return pcm[: limit + 1]


def trim_silence(pcm: np.ndarray, rate: int = RATE) -> np.ndarray:
    """Cut silence at both ends: 10 ms frames whose RMS is below max(loudest frame - 40 dB, -60 dBFS)
    are silence; 100 ms is kept around the first and last frame of sound. All silence -> empty."""
    n = int(rate * TRIM_FRAME_S)
    frames = len(pcm) // n
    if frames == 0:
        return pcm[:0]
    rms = np.sqrt(np.mean(np.square(pcm[: frames * n].reshape(frames, n), dtype=np.float64), axis=1))
    db = 20 * np.log10(np.maximum(rms, 1e-10))
    threshold = max(float(db.max()) - TRIM_RANGE_DB, TRIM_FLOOR_DBFS)
    loud = np.flatnonzero(db > threshold)
    if len(loud) == 0:
        return pcm[:0]
    pad = int(rate * TRIM_PAD_S)
    return pcm[max(0, loud[0] * n - pad): min(len(pcm), (loud[-1] + 1) * n + pad)]


def prepare(src: bytes | IO[bytes]) -> np.ndarray:
    """Decode, trim, check the length: the recording a voice keeps, or VoiceError."""
    pcm = trim_silence(decode(src))
    dur = len(pcm) / RATE
    if dur < MIN_S:
        raise VoiceError("audio_too_short", f"audio: {dur:.2f} s of sound after trimming silence; a voice "
                                            f"needs {MIN_S:g} to {MAX_S:g} s")
    if dur > MAX_S:
        more = "more than " if len(pcm) > MAX_DECODED_S * RATE else ""
        raise VoiceError("audio_too_long", f"audio: {more}{dur:.2f} s of sound after trimming silence; a voice "
                                           f"needs {MIN_S:g} to {MAX_S:g} s")
    return pcm


def wav_bytes(pcm: np.ndarray, rate: int = RATE) -> bytes:
    """16-bit PCM mono WAV: what every loader reads (torchaudio, soundfile, browsers); plenty for a prompt."""
    s16 = (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(s16.tobytes())
    return buf.getvalue()


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono")
        raw = w.readframes(w.getnframes())
        rate = w.getframerate()
    x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    return x if rate == RATE else soxr.resample(x, rate, RATE).astype(np.float32)


# -- the store --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Voice:
    id: str
    name: str
    text: str
    duration_s: float
    created: str
    path: Path = field(repr=False, compare=False)
    store: VoiceStore | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "text": self.text, "duration_s": self.duration_s,
                "created": self.created}

    @property
    def audio_path(self) -> Path:
        return self.path / "audio.wav"

    def audio(self) -> np.ndarray:
        """float32 mono at 44.1 kHz; VoiceError unknown_voice if the voice was removed meanwhile."""
        try:
            return read_wav(self.audio_path)
        except FileNotFoundError:
            raise VoiceError("unknown_voice", f"voice {self.id!r} was removed", 404) from None

    def wav(self) -> bytes:
        """The stored WAV file as bytes (for an engine that loads WAV itself)."""
        try:
            return self.audio_path.read_bytes()
        except FileNotFoundError:
            raise VoiceError("unknown_voice", f"voice {self.id!r} was removed", 404) from None

    def _cache_file(self, kind: str, model_key: str | None) -> Path:
        key = model_key or (self.store.model_key if self.store else None)
        if not key:
            raise ValueError("a model key is needed: pass model_key or open the store with model_key=")
        return self.path / "cache" / _check_key("model_key", key) / _check_key("kind", kind)

    def cached(self, kind: str, model_key: str | None = None) -> bytes | None:
        """What store_cached wrote for this kind and model, or None (never derived, other model, removed)."""
        try:
            return self._cache_file(kind, model_key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def store_cached(self, kind: str, model_key: str | None, data: bytes) -> None:
        """Write atomically (temp file + fsync + rename); a voice removed meanwhile is no error."""
        target = self._cache_file(kind, model_key)
        try:
            # Not parents=True: that would re-create the directory of a voice removed meanwhile.
            target.parent.parent.mkdir(exist_ok=True)
            target.parent.mkdir(exist_ok=True)
            _atomic_write(target, data)
        except FileNotFoundError:
            return


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{TMP}{secrets.token_hex(6)}-{path.name}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class VoiceStore:
    """Voices under root (created if missing). Thread-safe and multi-process-safe on one host."""

    def __init__(self, root: Path | str, *, max_voices: int = 1000, model_key: str | None = None):
        self.root = Path(root)
        self.max_voices = max_voices
        self.model_key = _check_key("model_key", model_key) if model_key else None
        self.root.mkdir(parents=True, exist_ok=True)
        self._scan: tuple[int, float, list[Voice]] | None = None  # (root mtime_ns, when, voices)
        self.clean()

    @classmethod
    def from_settings(cls, settings: Any, model_key: str | None = None) -> VoiceStore:
        root = settings.voices_dir or default_voices_dir()
        return cls(root, max_voices=settings.max_voices, model_key=model_key)

    # -- reading

    def _load(self, voice_id: str) -> Voice | None:
        d = self.root / voice_id
        try:
            meta = json.loads((d / "meta.json").read_bytes())
            return Voice(id=voice_id, name=str(meta.get("name") or voice_id), text=str(meta["text"]),
                         duration_s=float(meta["duration_s"]), created=str(meta["created"]), path=d, store=self)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # removed meanwhile, or not a voice (a stray directory)

    def get(self, voice_id: str) -> Voice | None:
        """The voice, read from disk now (so it is never stale), or None."""
        if not isinstance(voice_id, str) or not valid_id(voice_id):
            return None
        return self._load(voice_id)

    def require(self, voice_id: str) -> Voice:
        v = self.get(voice_id)
        if v is None:
            raise VoiceError("unknown_voice", f"voice {voice_id!r} is not registered", 404)
        return v

    def _ids(self) -> Iterator[str]:
        with os.scandir(self.root) as it:
            for e in it:
                if valid_id(e.name) and e.is_dir(follow_symlinks=False):
                    yield e.name

    def list(self) -> list[Voice]:
        """Every voice, oldest first; rescanned when the root changed or REVALIDATE_S passed."""
        mtime = self.root.stat().st_mtime_ns
        now = time.monotonic()
        scan = self._scan
        if scan and scan[0] == mtime and now - scan[1] < REVALIDATE_S:
            return list(scan[2])
        voices = [v for v in map(self._load, self._ids()) if v is not None]
        voices.sort(key=lambda v: (v.created, v.id))
        self._scan = (mtime, now, voices)
        return list(voices)

    def count(self) -> int:
        return sum(1 for _ in self._ids())

    # -- writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def new_id(self) -> str:
        while True:
            vid = "".join(secrets.choice(_ID_CHARS) for _ in range(10))
            if not (self.root / vid).exists():
                return vid

    def check_new(self, voice_id: str | None) -> None:
        """Early refusals before the costly decode (the commit checks again, atomically)."""
        if voice_id is not None:
            check_id(voice_id)
            if (self.root / voice_id).exists():
                raise VoiceError("voice_exists", f"voice {voice_id!r} exists; delete it first or pick another id",
                                 409)
        if self.count() >= self.max_voices:
            raise self._full()

    def _full(self) -> VoiceError:
        return VoiceError("too_many_voices", f"the store holds its maximum of {self.max_voices} voices; delete "
                                             "one first", TOO_MANY_VOICES_STATUS)

    def add(self, audio: bytes | IO[bytes], text: str | None, *, name: str | None = None,
            voice_id: str | None = None, _crash_before_commit: bool = False) -> Voice:
        """Decode, check, write atomically, return the voice. VoiceError for every refusal."""
        text = _clean_text(text)
        name = _clean_name(name)
        self.check_new(voice_id)
        pcm = prepare(audio)
        vid = voice_id or self.new_id()
        created = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        duration = round(len(pcm) / RATE, 3)
        meta = {"id": vid, "name": name or vid, "text": text, "duration_s": duration, "created": created}
        token, lock_fd = self._writer_lock()
        tmp = self.root / f"{TMP}{token}"
        try:
            tmp.mkdir()
            for fname, data in (("audio.wav", wav_bytes(pcm)),
                                ("meta.json", json.dumps(meta, ensure_ascii=False, indent=1).encode())):
                with open(tmp / fname, "xb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            self._match_owner(tmp)
            _fsync_dir(tmp)
            if _crash_before_commit:  # tests: the process dies here (os._exit), leaving the temp dir
                os._exit(17)
            with self._locked():
                if (self.root / vid).exists():
                    raise VoiceError("voice_exists", f"voice {vid!r} exists; delete it first or pick another id",
                                     409)
                if self.count() >= self.max_voices:
                    raise self._full()
                try:
                    os.rename(tmp, self.root / vid)  # fails onto an existing (never empty) voice directory
                except OSError as e:
                    if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        raise VoiceError("voice_exists", f"voice {vid!r} exists", 409) from None
                    raise
                _fsync_dir(self.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            os.unlink(self.root / f"{TMP}{token}.lock")
            os.close(lock_fd)
        self._scan = None
        v = self._load(vid)
        assert v is not None
        return v

    def _writer_lock(self) -> tuple[str, int]:
        """A held flock on ~tmp-<token>.lock: tells clean() in any process that this writer lives.
        Retried if a cleaner removed the file between its creation and our flock."""
        while True:
            token = secrets.token_hex(8)
            fd = os.open(self.root / f"{TMP}{token}.lock", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink > 0:
                return token, fd
            os.close(fd)

    def delete(self, voice_id: str) -> bool:
        """Remove atomically (rename away, then delete the files); False if there was no such voice.
        A context that already read the voice's audio keeps it."""
        if not isinstance(voice_id, str) or not valid_id(voice_id):
            return False
        gone = self.root / f"{DEL}{secrets.token_hex(8)}"
        with self._locked():
            try:
                os.rename(self.root / voice_id, gone)
            except FileNotFoundError:
                return False
            _fsync_dir(self.root)
        self._scan = None
        shutil.rmtree(gone, ignore_errors=True)
        return True

    def _match_owner(self, path: Path) -> None:
        """voxws-ops runs as root, the service as its user: give new files the store's owner."""
        if os.geteuid() != 0:
            return
        st = self.root.stat()
        if st.st_uid == 0 and st.st_gid == 0:
            return
        for p in [path, *path.rglob("*")]:
            os.chown(p, st.st_uid, st.st_gid, follow_symlinks=False)

    def clean(self) -> list[str]:
        """Remove what crashed writers and removers left: ~tmp dirs whose writer's lock is free (its
        process is gone) and ~del dirs. Returns the names removed."""
        removed = []
        with os.scandir(self.root) as it:
            names = [e.name for e in it]
        for name in names:
            p = self.root / name
            if name.startswith(DEL):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(name)
            elif name.startswith(TMP) and not name.endswith(".lock"):
                lock = self.root / f"{name}.lock"
                try:
                    fd = os.open(lock, os.O_RDWR)
                except FileNotFoundError:
                    fd = None  # the writer made its lock first: no lock, no writer
                try:
                    if fd is not None:
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        except BlockingIOError:
                            continue  # a live writer
                    shutil.rmtree(p, ignore_errors=True)
                    if fd is not None:
                        lock.unlink(missing_ok=True)
                    removed.append(name)
                finally:
                    if fd is not None:
                        os.close(fd)
            elif name.startswith(TMP) and name.endswith(".lock") and not (self.root / name[:-5]).exists():
                try:
                    fd = os.open(p, os.O_RDWR)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    p.unlink(missing_ok=True)
                    removed.append(name)
                except BlockingIOError:
                    pass
                finally:
                    os.close(fd)
        return removed


def _clean_text(text: str | None) -> str:
    text = (text or "").strip()
    if not text:
        raise VoiceError("missing_text", "text: the recording's transcript is required")
    if len(text) > MAX_TEXT_CHARS:
        raise VoiceError("bad_request", f"text: at most {MAX_TEXT_CHARS} characters (the transcript of at most "
                                        f"{MAX_S:g} s of speech)")
    return text


def _clean_name(name: str | None) -> str | None:
    name = (name or "").strip()
    if not name:
        return None
    if len(name) > MAX_NAME_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise VoiceError("bad_request", f"name: at most {MAX_NAME_CHARS} characters, no control characters")
    return name


__all__ = ["MAX_S", "MIN_S", "RATE", "Voice", "VoiceError", "VoiceStore", "decode", "default_voices_dir",
           "model_key"]
