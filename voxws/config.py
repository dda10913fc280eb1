"""Settings from the environment (and CLI flags), validated once.

One rule set serves `voxws serve` (at start-up, before any engine loads) and
`voxws-ops validate` (on env files): every rule lives in FIELDS below, and every
refusal names the variable, the value and the rule.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
FORMATS = ("pcm_s16le", "pcm_f32le", "pcm_mulaw", "wav", "mp3", "opus")  # WebSocket; codecs.HTTP_FORMATS adds aac, flac
ENGINES = ("nanovllm", "synthetic")
GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 253 characters at most.
HOST_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# VOXWS_* variables that are read elsewhere and are not server settings (tools, tests).
OTHER_ENV = frozenset({"VOXWS_BENCH_TOKEN", "VOXWS_TEST_HANG_ON_SIGNAL", "VOXWS_CHROMIUM", "VOXWS_PROBE_FILE",
                       "VOXWS_PROBE_TRACEMALLOC",
                       "VOXWS_STAGE_LOG"})  # benchmarks: per-stage timestamps (voxws/engines/engine_layer.py)


class ConfigError(ValueError):
    """One or more settings are invalid; str() lists one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Field:
    name: str  # attribute on Settings
    env: str  # environment variable
    parse: Callable[[str], Any]
    default: Any
    rule: str  # human sentence used in the error message
    check: Callable[[Any], bool] = lambda v: True
    help: str = ""


def _int(s: str) -> int:
    return int(s.strip(), 10)


def _float(s: str) -> float:
    v = float(s.strip())
    if not math.isfinite(v):
        raise ValueError(s)
    return v


def _str(s: str) -> str:
    return s.strip()


def _opt_str(s: str) -> str | None:
    return s.strip() or None


def _opt_int(s: str) -> int | None:
    return _int(s) if s.strip() else None


def _devices(s: str) -> tuple[int, ...]:
    parts = [p.strip() for p in s.split(",")]
    if not parts or any(not p.isdigit() for p in parts):
        raise ValueError(s)
    return tuple(int(p) for p in parts)


def _origins(s: str) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in s.split(",") if o.strip())


def _unique(v: tuple[int, ...]) -> bool:
    return len(set(v)) == len(v)


def valid_host(v: str) -> bool:
    """An IP address (v4 or v6) or an RFC 1123 host name: what the server can bind to."""
    try:
        ipaddress.ip_address(v)
        return True
    except ValueError:
        pass
    name = v[:-1] if v.endswith(".") else v
    return 0 < len(name) <= 253 and all(HOST_LABEL_RE.match(label) for label in name.split("."))


FIELDS: tuple[Field, ...] = (
    Field("group", "VOXWS_GROUP", _str, "group0", "1-64 characters of [A-Za-z0-9_.-]",
          lambda v: bool(GROUP_RE.match(v)), "group name (the %i of voxcpm@%i)"),
    Field("host", "VOXWS_HOST", _str, "127.0.0.1",
          "a host name or IP address, e.g. 127.0.0.1, 0.0.0.0, ::1 or localhost", valid_host, "listen address"),
    Field("port", "VOXWS_PORT", _int, 8081, "an integer from 1 to 65535", lambda v: 1 <= v <= 65535,
          "listen port"),
    Field("engine", "VOXWS_ENGINE", _str, "nanovllm", "one of: " + ", ".join(ENGINES),
          lambda v: v in ENGINES, "engine backend"),
    Field("model_path", "VOXCPM_MODEL_PATH", _opt_str, None, "a model directory", help="model directory"),
    Field("devices", "VOXCPM_DEVICES", _devices, (0,),
          "comma-separated distinct GPU indices relative to CUDA_VISIBLE_DEVICES, e.g. 0,1", _unique,
          "GPU indices of this group"),
    Field("gpu_memory_utilization", "VOXCPM_GPU_MEMORY_UTILIZATION", _float, 0.4,
          "a number from 0.4 to 0.95 (below 0.4 the KV cache does not fit; above 0.95 CUDA graphs "
          "and the VAE run the card out of memory)", lambda v: 0.4 <= v <= 0.95,
          "fraction of each card the engine may take"),
    Field("max_num_seqs", "VOXCPM_MAX_NUM_SEQS", _int, 128, "an integer from 1 to 512",
          lambda v: 1 <= v <= 512, "sequences per engine step (per GPU)"),
    Field("max_model_len", "VOXCPM_MAX_MODEL_LEN", _int, 2048,
          "a multiple of 256 from 256 to 32768", lambda v: 256 <= v <= 32768 and v % 256 == 0,
          "positions per sequence (text tokens + audio steps)"),
    Field("auth_token_file", "VOXWS_AUTH_TOKEN_FILE", _opt_str, None, "a readable file holding the token",
          help="bearer token file (access control off when unset)"),
    Field("allowed_origins", "VOXWS_ALLOWED_ORIGINS", _origins, (),
          "comma-separated origins such as https://app.example.com",
          lambda v: all(re.match(r"^(https?://[^/\s]+|null)$", o) for o in v),
          "browser origins allowed to connect (any when unset)"),
    Field("max_connections", "VOXWS_MAX_CONNECTIONS", _int, 1024, "an integer from 1 to 100000",
          lambda v: 1 <= v <= 100_000, "WebSocket connections per process"),
    Field("max_queue", "VOXWS_MAX_QUEUE", _int, 256, "an integer from 0 to 100000",
          lambda v: 0 <= v <= 100_000, "contexts waiting for an engine slot before `busy`"),
    Field("max_contexts", "VOXWS_MAX_CONTEXTS", _int, 8, "an integer from 1 to 1024",
          lambda v: 1 <= v <= 1024, "open contexts per socket"),
    Field("max_text_chars", "VOXWS_MAX_TEXT_CHARS", _int, 5000, "an integer from 1 to 1000000",
          lambda v: 1 <= v <= 1_000_000, "characters per text (per context)"),
    Field("max_message_bytes", "VOXWS_MAX_MESSAGE_BYTES", _int, 65536, "an integer from 1024 to 16777216",
          lambda v: 1024 <= v <= 16 * 1024 * 1024, "bytes per client frame"),
    Field("idle_timeout_s", "VOXWS_IDLE_TIMEOUT_S", _float, 300.0, "a number of seconds from 1 to 86400",
          lambda v: 1 <= v <= 86400, "close a socket with no message and no open context after this"),
    Field("drain_timeout_s", "VOXWS_DRAIN_TIMEOUT_S", _float, 60.0,
          "a number of seconds from 0 to 3600 (keep it below the unit's TimeoutStopSec)",
          lambda v: 0 <= v <= 3600, "how long SIGTERM waits for contexts in flight"),
    Field("rate_limit_per_s", "VOXWS_RATE_LIMIT_PER_S", _float, 50.0, "a number from 1 to 100000",
          lambda v: 1 <= v <= 100_000, "control messages per second per socket (burst: twice that)"),
    Field("max_unsent_audio_s", "VOXWS_MAX_UNSENT_AUDIO_S", _float, 60.0, "a number of seconds from 1 to 3600",
          lambda v: 1 <= v <= 3600, "audio a socket may leave unread before `slow_consumer`"),
    Field("stall_timeout_s", "VOXWS_STALL_TIMEOUT_S", _float, 20.0, "a number of seconds from 1 to 3600",
          lambda v: 1 <= v <= 3600, "how long a blocked write may last before `slow_consumer`"),
    Field("text_delay_ms", "VOXWS_TEXT_DELAY_MS", _int, 400, "an integer from 0 to 60000",
          lambda v: 0 <= v <= 60_000, "incremental text: speak buffered text this long after the last `text`"),
    Field("text_buffer_chars", "VOXWS_TEXT_BUFFER_CHARS", _int, 60, "an integer from 1 to 100000",
          lambda v: 1 <= v <= 100_000, "incremental text: speak at a clause end once this many chars wait"),
    Field("log_format", "VOXWS_LOG_FORMAT", _opt_str, None, "json or console",
          lambda v: v in (None, "json", "console"), "log line format (json when stdout is not a TTY)"),
    Field("synthetic_step_base_ms", "VOXWS_SYNTHETIC_STEP_BASE_MS", _float, 9.5,
          "a number of milliseconds from 0 to 10000", lambda v: 0 <= v <= 10_000,
          "synthetic engine: fixed time per step (H100: 9.5)"),
    Field("synthetic_step_per_seq_ms", "VOXWS_SYNTHETIC_STEP_PER_SEQ_MS", _float, 0.53,
          "a number of milliseconds from 0 to 1000", lambda v: 0 <= v <= 1000,
          "synthetic engine: extra time per sequence in a step (H100: 0.53)"),
    Field("synthetic_fail_marker", "VOXWS_SYNTHETIC_FAIL_MARKER", _opt_str, None, "any text",
          help="synthetic engine: a request whose text contains this fails"),
    Field("synthetic_crash_after_steps", "VOXWS_SYNTHETIC_CRASH_AFTER_STEPS", _opt_int, None,
          "a positive integer", lambda v: v is None or v > 0,
          "synthetic engine: a worker dies after this many steps"),
    Field("bench_steps", "VOXWS_BENCH_STEPS", _opt_int, None, "a positive integer",
          lambda v: v is None or v > 0,
          "benchmarks with random weights only: every request generates exactly this many steps"),
    Field("voices_dir", "VOXWS_VOICES_DIR", _opt_str, None, "a directory path",
          help="voice store, one per host, shared by its groups [default: $STATE_DIRECTORY/voices under "
               "systemd, else ~/.local/share/voxws/voices]"),
    Field("default_voice", "VOXWS_DEFAULT_VOICE", _opt_str, None, "1-64 characters of [A-Za-z0-9_.-]",
          lambda v: v is None or (bool(re.match(r"^[A-Za-z0-9_.-]{1,64}$", v)) and v not in (".", "..")),
          "voice id used when a context names none"),
    Field("max_voices", "VOXWS_MAX_VOICES", _int, 1000, "an integer from 1 to 100000",
          lambda v: 1 <= v <= 100_000, "voices the store may hold"),
    Field("max_upload_bytes", "VOXWS_MAX_UPLOAD_BYTES", _int, 10_000_000, "an integer from 1024 to 1000000000",
          lambda v: 1024 <= v <= 1_000_000_000, "largest POST /v1/voices body (bytes)"),
    Field("engine_vae", "VOXWS_ENGINE_VAE", _str, "batched", "one of: engine, batched",
          lambda v: v in ("engine", "batched"),
          "nanovllm: streaming VAE decode: voxws's batched one (nano-vllm-voxcpm 2.0.5 only) or the engine's"),
)
FIELD_BY_ENV = {f.env: f for f in FIELDS}


@dataclass(frozen=True)
class Settings:
    group: str = "group0"
    host: str = "127.0.0.1"
    port: int = 8081
    engine: str = "nanovllm"
    model_path: str | None = None
    devices: tuple[int, ...] = (0,)
    gpu_memory_utilization: float = 0.4
    max_num_seqs: int = 128
    max_model_len: int = 2048
    auth_token_file: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_connections: int = 1024
    max_queue: int = 256
    max_contexts: int = 8
    max_text_chars: int = 5000
    max_message_bytes: int = 65536
    idle_timeout_s: float = 300.0
    drain_timeout_s: float = 60.0
    rate_limit_per_s: float = 50.0
    max_unsent_audio_s: float = 60.0
    stall_timeout_s: float = 20.0
    text_delay_ms: int = 400
    text_buffer_chars: int = 60
    log_format: str | None = None
    synthetic_step_base_ms: float = 9.5
    synthetic_step_per_seq_ms: float = 0.53
    synthetic_fail_marker: str | None = None
    synthetic_crash_after_steps: int | None = None
    bench_steps: int | None = None
    voices_dir: str | None = None
    default_voice: str | None = None
    max_voices: int = 1000
    max_upload_bytes: int = 10_000_000
    engine_vae: str = "batched"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def auth_token(self) -> str | None:
        if not self.auth_token_file:
            return None
        with open(self.auth_token_file, encoding="utf-8") as f:
            return f.read().strip() or None


def problem(source: str, env: str, value: object, rule: str) -> str:
    """The one shape of every refusal: where, which variable, what value, which rule."""
    where = f"{source}: " if source else ""
    return f"{where}{env}={value!s}: must be {rule}"


def flag_name(field: Field) -> str:
    """The `voxws serve` flag of a setting (--model-path for model_path)."""
    return "--" + field.name.replace("_", "-")


def describe_default(field: Field) -> str:
    """A default as a user writes it: 0,1 for a tuple, `unset` for None or nothing."""
    d = field.default
    if d is None or d == ():
        return "unset"
    if isinstance(d, tuple):
        return ",".join(map(str, d))
    return f"{d:g}" if isinstance(d, float) else str(d)


def parse_value(field: Field, raw: str, source: str = "", name: str | None = None) -> tuple[Any, str | None]:
    """Parse and check one raw value; return (value, problem-or-None). name: the flag it came from."""
    try:
        value = field.parse(raw)
        ok = field.check(value)
    except (ValueError, TypeError):
        ok = False
    if ok:
        return value, None
    rule = field.rule
    if "#" in raw:  # systemd keeps everything after `=` as the value: no trailing comments
        rule += " (an env file has no trailing comments: put `# ...` on a line of its own)"
    return None, problem(source, name or field.env, raw, rule)


def missing_model_files(path: str) -> list[str]:
    """What a VoxCPM 1.5 model directory lacks (empty when complete): the rule for the engine's
    start-up check and for `voxws-ops validate` alike."""
    d = Path(path)
    return [name for name, ok in (
        ("config.json", (d / "config.json").is_file()),
        ("*.safetensors", any(d.glob("*.safetensors"))),
        ("audiovae.pth", (d / "audiovae.pth").is_file()),
        ("tokenizer.json or tokenizer.model", (d / "tokenizer.json").is_file() or (d / "tokenizer.model").is_file()),
        ("tokenizer_config.json", (d / "tokenizer_config.json").is_file()),
    ) if not ok]


def model_dir_problem(path: str, source: str = "", name: str = "VOXCPM_MODEL_PATH") -> str | None:
    """A missing or incomplete model directory, as one line (None when it is complete)."""
    if not Path(path).is_dir():
        return problem(source, name, path, "an existing VoxCPM 1.5 model directory (download it, e.g. "
                                           "huggingface-cli download openbmb/VoxCPM1.5 --local-dir DIR)")
    missing = missing_model_files(path)
    if missing:
        return problem(source, name, path, "a VoxCPM 1.5 model directory; missing: " + ", ".join(missing))
    return None


def check_cross(s: Settings, source: str = "", failed: frozenset[str] = frozenset()) -> list[str]:
    """Rules that involve more than one setting, or the outside world. failed: variables whose own
    value was refused (their rules are not applied to the default standing in for them)."""
    out: list[str] = []
    if "VOXWS_ENGINE" not in failed and "VOXCPM_MODEL_PATH" not in failed \
            and s.engine == "nanovllm" and not s.model_path:
        flag = "" if source else " (or `voxws serve --model-path DIR`)"  # an env file has no flags
        out.append(problem(source, "VOXCPM_MODEL_PATH", "",
                           f"set to a model directory when VOXWS_ENGINE=nanovllm{flag}"))
    if s.auth_token_file:
        try:
            if not s.auth_token():
                out.append(problem(source, "VOXWS_AUTH_TOKEN_FILE", s.auth_token_file,
                               "a file holding a non-empty token"))
        except OSError as e:
            out.append(problem(source, "VOXWS_AUTH_TOKEN_FILE", s.auth_token_file,
                               f"a readable file holding the token ({e.strerror})"))
    return out


@dataclass(frozen=True)
class Parsed:
    """Settings with every value that passed its rule (defaults elsewhere), and the refusals."""
    settings: Settings
    problems: list[str]
    failed: frozenset[str]  # environment variable names whose value was refused


def parse_env(env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None,
              source: str = "") -> Parsed:
    """Every problem at once, without raising: `voxws-ops validate` goes on checking what did parse.

    overrides: CLI flag values keyed by environment variable name; a refused one is named by its flag.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    problems: list[str] = []
    failed: set[str] = set()
    for f in FIELDS:
        name = None
        if overrides and overrides.get(f.env) is not None:
            raw, name = str(overrides[f.env]), flag_name(f)
        elif f.env in env:
            raw = env[f.env]
        else:
            continue
        value, err = parse_value(f, raw, source, name)
        if err:
            problems.append(err)
            failed.add(f.env)
        else:
            values[f.name] = value
    settings = Settings(**values)
    frozen = frozenset(failed)
    problems += check_cross(settings, source, frozen)
    return Parsed(settings, problems, frozen)


def load(env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None,
         source: str = "") -> Settings:
    """Build Settings from env (default os.environ) plus CLI overrides keyed by env name.

    Raises ConfigError listing every problem at once, so a bad unit file is fixed in one go.
    """
    parsed = parse_env(env, overrides, source)
    if parsed.problems:
        raise ConfigError(parsed.problems)
    return parsed.settings


def unknown_env(env: Mapping[str, str]) -> list[str]:
    """Warnings for VOXWS_*/VOXCPM_* variables that are no setting (a typo the server would ignore)."""
    out = []
    for key in sorted(env):
        if key.startswith(("VOXWS_", "VOXCPM_")) and key not in FIELD_BY_ENV and key not in OTHER_ENV:
            near = difflib.get_close_matches(key, list(FIELD_BY_ENV), n=1, cutoff=0.75)
            hint = f"did you mean {near[0]}?" if near else "a typo?"
            out.append(f"{key} is not a voxws setting ({hint}); it is ignored (`voxws config` lists them all)")
    return out
