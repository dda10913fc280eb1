"""`voxws-ops voices add/list/remove`: the host's voice store, written directly (voxws.voices, the code the
servers use), so it works with the services stopped as well as running (they see changes within 2 s).

Which directory: --dir, else $VOXWS_VOICES_DIR, else the one the installed groups use (VOXWS_VOICES_DIR in
<root>/etc/voxcpm/*.env, else the unit's /var/lib/voxcpm/voices), else ~/.local/share/voxws/voices (what
`voxws serve` uses outside systemd). Run as root, new voices get the store directory's owner.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from voxws import config
from voxws.ops import envfile
from voxws.ops.plan import hidden_path
from voxws.voices import VoiceError, VoiceStore, default_voices_dir, valid_id

UNIT_VOICES_DIR = "/var/lib/voxcpm/voices"  # Environment=VOXWS_VOICES_DIR in the unit template
WRITABLE = ("/var/lib/voxcpm", "/var/cache/voxcpm")  # what ProtectSystem=strict leaves writable

app = typer.Typer(help="Add, list and remove the host's voices (the store every group shares).",
                  no_args_is_help=True, add_completion=False, rich_markup_mode=None)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Dir = Annotated[Path | None, typer.Option("--dir", help="the voices directory [default: VOXWS_VOICES_DIR, else "
                                                        "the installed groups', else ~/.local/share/voxws/voices]")]
Root = Annotated[Path, typer.Option(help="where the installed env files are (install --root)")]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def installed(root: Path) -> tuple[Path | None, int]:
    """(voices dir, max voices) of the groups installed under root, or (None, 1000) when none are."""
    files = sorted((root / "etc/voxcpm").glob("*.env"))
    if not files:
        return None, config.Settings().max_voices
    dirs, limits = set(), []
    for f in files:
        env = envfile.read(f)
        dirs.add(env.get("VOXWS_VOICES_DIR") or UNIT_VOICES_DIR)
        if "VOXWS_MAX_VOICES" in env:
            limits.append(int(env["VOXWS_MAX_VOICES"]))
    if len(dirs) > 1:
        raise VoiceError("bad_request", f"the groups under {root / 'etc/voxcpm'} use different voices directories "
                                        f"({', '.join(sorted(dirs))}): pick one with --dir")
    d = dirs.pop()
    return root / d.lstrip("/"), min(limits, default=config.Settings().max_voices)


def open_store(dir_opt: Path | None, root: Path) -> VoiceStore:
    limit = config.Settings().max_voices
    if dir_opt is not None:
        d = dir_opt
    elif os.environ.get("VOXWS_VOICES_DIR"):
        d = Path(os.environ["VOXWS_VOICES_DIR"])
    else:
        found, limit = installed(root)
        d = found or default_voices_dir()
    if os.environ.get("VOXWS_MAX_VOICES", "").strip().isdigit():
        limit = int(os.environ["VOXWS_MAX_VOICES"])
    return VoiceStore(d, max_voices=limit)


def _run(fn):  # VoiceError and OSError become one error line and exit 1
    try:
        return fn()
    except VoiceError as e:
        err.print(f"error: {e.code}: {e.message}", markup=False)
    except OSError as e:
        err.print(f"error: {e}", markup=False)
    raise typer.Exit(1)


@app.command("add")
def add_cmd(audio: Annotated[Path, typer.Argument(help="the recording: WAV, FLAC, MP3, Ogg/Opus, WebM/Opus or M4A, "
                                                       "1-30 s of speech")],
            text: Annotated[str, typer.Option(help="what is said in the recording, exactly")],
            name: Annotated[str | None, typer.Option(help="a display name [default: the id]")] = None,
            voice_id: Annotated[str | None, typer.Option("--id", help="1-64 characters of [A-Za-z0-9_.-] "
                                                                      "[default: made up]")] = None,
            dir_opt: Dir = None, root: Root = Path("/"), as_json: AsJson = False) -> None:
    """Add a voice from a recording and its transcript.

    Example: sudo voxws-ops voices add me.wav --text "what I said in it" --id me
    """
    def go():
        store = open_store(dir_opt, root)
        with open(audio, "rb") as f:
            return store, store.add(f, text, name=name, voice_id=voice_id)
    store, v = _run(go)
    if as_json:
        out.print(json.dumps(v.to_json(), ensure_ascii=False), markup=False)
    else:
        out.print(f"added {v.id} ({v.duration_s:g} s) in {store.root}", markup=False)


@app.command("list")
def list_cmd(dir_opt: Dir = None, root: Root = Path("/"), as_json: AsJson = False) -> None:
    """List the voices.

    Example: voxws-ops voices list
    """
    store = _run(lambda: open_store(dir_opt, root))
    voices = _run(store.list)
    if as_json:
        out.print(json.dumps([v.to_json() for v in voices], ensure_ascii=False), markup=False)
        return
    t = Table("id", "name", "seconds", "created", "text", title=f"{len(voices)} voice(s) in {store.root}")
    for v in voices:
        t.add_row(v.id, v.name, f"{v.duration_s:g}", v.created, v.text if len(v.text) <= 60 else v.text[:57] + "...")
    out.print(t)


@app.command("remove")
def remove_cmd(voice_id: Annotated[str, typer.Argument(help="the voice's id")], dir_opt: Dir = None,
               root: Root = Path("/")) -> None:
    """Remove a voice (contexts already speaking with it finish).

    Example: sudo voxws-ops voices remove me
    """
    store = _run(lambda: open_store(dir_opt, root))
    if not _run(lambda: store.delete(voice_id)):
        err.print(f"error: unknown_voice: no voice {voice_id!r} in {store.root}", markup=False)
        raise typer.Exit(1)
    out.print(f"removed {voice_id} from {store.root}", markup=False)


def problems(source: str, s: config.Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings) about a group's voices directory and default voice, for `voxws-ops validate`."""
    errors: list[str] = []
    warnings: list[str] = []
    d = s.voices_dir or UNIT_VOICES_DIR
    env = "VOXWS_VOICES_DIR"
    if hidden_path(d):
        errors.append(config.problem(source, env, d, "outside /home, /root and /run/user, which the unit's "
                                                     "ProtectHome=yes hides"))
        return errors, warnings
    if not any(d == w or d.startswith(w + "/") for w in WRITABLE):
        warnings.append(f"{source}: {env}={d}: the unit's ProtectSystem=strict makes it read-only unless a "
                        f"drop-in adds ReadWritePaths={d}; the default {UNIT_VOICES_DIR} needs nothing")
    p = Path(d)
    if p.exists() and not p.is_dir():
        errors.append(config.problem(source, env, d, "a directory (it is a file)"))
        return errors, warnings
    if s.default_voice:
        if not p.is_dir():
            errors.append(config.problem(source, "VOXWS_DEFAULT_VOICE", s.default_voice,
                                         f"a voice in {d}, which does not exist yet (voxws-ops voices add ... "
                                         f"--id {s.default_voice})"))
        elif not valid_id(s.default_voice) or not (p / s.default_voice / "meta.json").is_file():
            errors.append(config.problem(source, "VOXWS_DEFAULT_VOICE", s.default_voice,
                                         f"a voice in {d} (voxws-ops voices list); there is none by that id"))
    return errors, warnings
