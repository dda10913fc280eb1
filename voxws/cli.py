"""`voxws serve`: every flag is also an environment variable (see voxws/config.py).

Every refusal is one line naming the flag or variable, the value and the rule, with exit code 2,
before anything loads; flags are read as text and checked by config's rules, so `--port abc` gets
the same kind of line as `VOXWS_PORT=abc`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import json
import os
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer

from voxws import __version__, config, logs

# rich_markup_mode=None: plain help, so that "[env VOXWS_PORT; default 8081]" is shown, not eaten as markup.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="voxws: real-time WebSocket text-to-speech for VoxCPM 1.5.")

# The gpu extra installs these; without them the nanovllm engine cannot start.
GPU_MODULES = ("torch", "nanovllm_voxcpm")
INSTALL_GPU = "pip install 'dist/voxws_server-*.whl[gpu]' or pip install '.[gpu]' in a checkout (README)"


def version_option(prog: str) -> Any:
    """An eager --version for a typer callback: prints `PROG VERSION` and exits 0."""
    def show(value: bool) -> None:
        if value:
            print(f"{prog} {__version__}")
            raise typer.Exit()
    return typer.Option(False, "--version", callback=show, is_eager=True, help="Print the version and exit.")


@app.callback()
def main(version: bool = version_option("voxws")) -> None:
    """voxws: real-time WebSocket text-to-speech for VoxCPM 1.5."""


def _flag(env: str, metavar: str, extra: str = "") -> Any:
    """A serve flag whose help comes from the setting: meaning, variable and default."""
    f = config.FIELD_BY_ENV[env]
    return typer.Option(None, config.flag_name(f), metavar=metavar, show_default=False,
                        help=f"{f.help}{extra} [env {env}; default {config.describe_default(f)}]")


@app.command()
def serve(
    host: str = _flag("VOXWS_HOST", "HOST"),
    port: str = _flag("VOXWS_PORT", "PORT"),
    engine: str = _flag("VOXWS_ENGINE", "ENGINE", ": nanovllm (GPU) or synthetic (CPU stand-in)"),
    group: str = _flag("VOXWS_GROUP", "NAME"),
    model_path: str = _flag("VOXCPM_MODEL_PATH", "DIR", " (needed for nanovllm)"),
    log_format: str = _flag("VOXWS_LOG_FORMAT", "FORMAT", ": json or console"),
    check: bool = typer.Option(False, "--check", help="Check the settings, print the addresses it would serve "
                                                      "and exit (bin/serve runs this first)."),
) -> None:
    """Serve the voxws.v1 WebSocket protocol on one GPU group (or the synthetic engine).

    Every other setting is an environment variable: `voxws config` lists them.

    Example: voxws serve --engine synthetic --port 8081
    """
    overrides = {"VOXWS_HOST": host, "VOXWS_PORT": port, "VOXWS_ENGINE": engine, "VOXWS_GROUP": group,
                 "VOXCPM_MODEL_PATH": model_path, "VOXWS_LOG_FORMAT": log_format}
    for warning in config.unknown_env(os.environ):  # first: a typo may be why a rule below fails
        print(f"voxws: warning: {warning}", file=sys.stderr)
    settings = _settings(overrides, model_flag=model_path is not None)
    if check:
        print(banner(settings))
        return
    logs.configure(settings.log_format)
    if not _loopback(settings.host) and not settings.auth_token_file:
        logs.log.warning("open_bind", host=settings.host,
                         advice="listening beyond loopback without VOXWS_AUTH_TOKEN_FILE: anyone who can reach "
                                "this port can use the GPUs")
    from voxws.server import run

    raise typer.Exit(run(settings))


def _settings(overrides: dict[str, Any], model_flag: bool,
              find_spec: Callable[[str], object] = importlib.util.find_spec) -> config.Settings:
    """The settings, or exit 2 with one line per problem: the rules, then what the engine needs."""
    try:
        s = config.load(overrides=overrides)
    except config.ConfigError as e:
        _refuse(e.problems)
    problems = []
    if s.engine == "nanovllm" and s.model_path:
        name = "--model-path" if model_flag else "VOXCPM_MODEL_PATH"
        if p := config.model_dir_problem(s.model_path, name=name):
            problems.append(p)
        missing = [m for m in GPU_MODULES if find_spec(m) is None]
        if missing:
            problems.append(config.problem("", "VOXWS_ENGINE", "nanovllm",
                                           f"used with the gpu extra installed ({', '.join(missing)} missing: "
                                           f"{INSTALL_GPU}); or use --engine synthetic"))
    if problems:
        _refuse(problems)
    return s


def _refuse(problems: list[str]) -> NoReturn:
    for line in problems:
        print(f"voxws: invalid setting: {line}", file=sys.stderr)
    raise typer.Exit(2)


def banner(s: config.Settings) -> str:
    """The addresses a user opens, for the host as given (a wildcard means this machine)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(s.host, s.host)
    if ":" in host:
        host = f"[{host}]"
    return (f"voxws ({s.engine} engine): demo page http://{host}:{s.port}/  "
            f"WebSocket ws://{host}:{s.port}/v1/tts")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may resolve to anything


@app.command("config")
def show_config() -> None:
    """Print every setting: its environment variable, default, meaning and rule."""
    width = max(len(f.env) for f in config.FIELDS) + 2
    for f in config.FIELDS:
        print(f"{f.env:{width}}default {config.describe_default(f):12} {f.help}; must be {f.rule}")


@app.command()
def say(
    text: str = typer.Argument(..., help="Text to speak; - reads it from standard input."),
    out: Path = typer.Option(..., "--out", "-o", metavar="FILE",
                             help="Audio file to write: FILE.wav (16-bit PCM WAV), any other name raw pcm_s16le."),
    url: str = typer.Option("ws://127.0.0.1:8081/v1/tts", metavar="URL", help="The server's WebSocket URL."),
    sample_rate: str = typer.Option(None, metavar="HZ", show_default=False,
                                    help="Output rate, one of " + ", ".join(map(str, config.SAMPLE_RATES))
                                         + " [default: the model's native rate]"),
    token_file: Path = typer.Option(None, metavar="FILE", show_default=False,
                                    help="File holding the bearer token (when the server has one)."),
    voice: str = typer.Option(None, metavar="ID", show_default=False,
                              help="A registered voice (POST /v1/voices) [default: the server's default voice]."),
) -> None:
    """Speak TEXT into an audio file: try a server from a terminal without a client of your own.

    Example: voxws say "你好，世界。" --out hello.wav   (play: ffplay hello.wav)
    """
    problems = []
    if not url.startswith(("ws://", "wss://")):
        problems.append(f"--url={url}: must start with ws:// or wss://")
    if sample_rate is not None and (not sample_rate.isdigit() or int(sample_rate) not in config.SAMPLE_RATES):
        problems.append(f"--sample-rate={sample_rate}: must be one of {', '.join(map(str, config.SAMPLE_RATES))}")
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            problems.append(f"--token-file={token_file}: must be a readable file holding the token ({e.strerror})")
    text = sys.stdin.read() if text == "-" else text
    if not text.strip():
        problems.append("TEXT: must not be empty")
    if problems:
        for line in problems:
            print(f"voxws: {line}", file=sys.stderr)
        raise typer.Exit(2)
    try:
        pcm, rate, done = asyncio.run(_speak(url, text, int(sample_rate) if sample_rate else None, token, voice))
    except (OSError, TimeoutError) as e:
        print(f"voxws: cannot reach {url}: {e} (is `voxws serve` running?)", file=sys.stderr)
        raise typer.Exit(1) from None
    except _Refused as e:
        print(f"voxws: the server refused: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    if out.suffix.lower() == ".wav":
        with wave.open(str(out), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm)
    else:
        out.write_bytes(pcm)
    print(f"wrote {out}: {len(pcm) / 2 / rate:.2f} s of audio at {rate} Hz (first audio after "
          f"{done.get('ttfb_ms')} ms)")


class _Refused(Exception):
    pass


async def _speak(url: str, text: str, rate: int | None, token: str | None,
                 voice: str | None = None) -> tuple[bytes, int, dict[str, Any]]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    msg: dict[str, Any] = {"type": "speak", "text": text, "format": "pcm_s16le"}
    if rate:
        msg["sample_rate"] = rate
    if voice:
        msg["voice"] = voice
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async with connect(url, additional_headers=headers, compression=None, max_size=None,
                           open_timeout=10) as ws:
            ready = json.loads(await ws.recv())
            native = int(ready.get("sample_rate", 44100))
            await ws.send(json.dumps(msg))
            pcm = bytearray()
            async for frame in ws:
                if isinstance(frame, bytes):
                    pcm += frame
                    continue
                m = json.loads(frame)
                if m.get("type") == "done":
                    return bytes(pcm), rate or native, m
                if m.get("type") == "error":
                    raise _Refused(f"{m.get('code')}: {m.get('message')}")
    except InvalidStatus as e:
        raise _Refused(f"HTTP {e.response.status_code} at the handshake ({e.response.body!r})") from None
    raise _Refused("the connection closed before `done`")
