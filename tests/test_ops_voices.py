"""voxws-ops voices add/list/remove (the same store the servers use, with or without them running) and
what `voxws-ops validate` says about the voices directory and the default voice."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from tests.audiofiles import encode, speechlike
from tests.voices_app import request, serving
from voxws.ops.cli import app
from voxws.ops.validate import validate
from voxws.voices import VoiceStore

runner = CliRunner()
TEXT = "what I said in it"


def recording(tmp_path: Path, fmt: str = "flac", seconds: float = 2.0) -> Path:
    p = tmp_path / f"me-{seconds:g}.{fmt}"
    p.write_bytes(encode(fmt, speechlike(seconds, 44100), 44100))
    return p


def test_add_list_remove(tmp_path: Path) -> None:
    d = tmp_path / "voices"
    r = runner.invoke(app, ["voices", "add", str(recording(tmp_path)), "--text", TEXT, "--id", "me", "--name", "Me",
                            "--dir", str(d)])
    assert r.exit_code == 0 and "added me (2" in r.output, r.output
    r = runner.invoke(app, ["voices", "add", str(recording(tmp_path, "mp3")), "--text", TEXT, "--dir", str(d),
                            "--json"])
    made = json.loads(r.output)
    assert r.exit_code == 0 and made["name"] == made["id"] and made["text"] == TEXT
    r = runner.invoke(app, ["voices", "list", "--dir", str(d), "--json"])
    assert sorted(v["id"] for v in json.loads(r.output)) == sorted(["me", made["id"]])
    r = runner.invoke(app, ["voices", "list", "--dir", str(d)])
    assert r.exit_code == 0 and "2 voice(s)" in r.output and "Me" in r.output
    assert runner.invoke(app, ["voices", "remove", "me", "--dir", str(d)]).exit_code == 0
    r = runner.invoke(app, ["voices", "remove", "me", "--dir", str(d)])
    assert r.exit_code == 1 and "unknown_voice" in r.output
    assert [v.id for v in VoiceStore(d).list()] == [made["id"]]


def test_refusals_name_the_code(tmp_path: Path) -> None:
    d = tmp_path / "voices"
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    for args, code in ((["add", str(junk), "--text", TEXT], "bad_audio"),
                       (["add", str(recording(tmp_path, seconds=0.5)), "--text", TEXT], "audio_too_short"),
                       (["add", str(recording(tmp_path)), "--text", " "], "missing_text"),
                       (["add", str(recording(tmp_path)), "--text", TEXT, "--id", "a/b"], "bad_request"),
                       (["add", str(tmp_path / "missing.wav"), "--text", TEXT], "No such file")):
        r = runner.invoke(app, ["voices", *args, "--dir", str(d)])
        assert r.exit_code == 1 and code in r.output, (args, r.output)
    assert VoiceStore(d).list() == []
    for cmd in ("add", "list", "remove"):
        r = runner.invoke(app, ["voices", cmd, "--help"])
        assert r.exit_code == 0 and "Example:" in r.output, cmd


def test_the_installed_groups_directory_is_found(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("VOXWS_VOICES_DIR", raising=False)
    etc = tmp_path / "etc/voxcpm"
    etc.mkdir(parents=True)
    (etc / "group0.env").write_text("VOXWS_PORT=8081\n")
    (etc / "group1.env").write_text("VOXWS_PORT=8082\nVOXWS_MAX_VOICES=1\n")
    r = runner.invoke(app, ["voices", "add", str(recording(tmp_path)), "--text", TEXT, "--id", "me", "--root",
                            str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "var/lib/voxcpm/voices/me/meta.json").is_file()
    r = runner.invoke(app, ["voices", "add", str(recording(tmp_path)), "--text", TEXT, "--root", str(tmp_path)])
    assert r.exit_code == 1 and "too_many_voices" in r.output  # the groups' own limit
    (etc / "group1.env").write_text(f"VOXWS_VOICES_DIR={tmp_path}/elsewhere\n")
    r = runner.invoke(app, ["voices", "list", "--root", str(tmp_path)])
    assert r.exit_code == 1 and "different voices directories" in r.output


def test_works_next_to_a_running_server(tmp_path: Path) -> None:
    d = tmp_path / "voices"
    with serving(d) as srv:
        assert runner.invoke(app, ["voices", "add", str(recording(tmp_path)), "--text", TEXT, "--id", "ops",
                                   "--dir", str(d)]).exit_code == 0
        t0 = time.monotonic()
        while request(srv.port, "GET", "/v1/voices/ops")[0] != 200:
            assert time.monotonic() - t0 < 2.0
            time.sleep(0.05)
        assert runner.invoke(app, ["voices", "remove", "ops", "--dir", str(d)]).exit_code == 0
        while request(srv.port, "GET", "/v1/voices")[1]["voices"]:
            assert time.monotonic() - t0 < 4.0
            time.sleep(0.05)


def env_file(tmp_path: Path, **env: str) -> Path:
    p = tmp_path / "group0.env"
    p.write_text("VOXWS_ENGINE=synthetic\n" + "".join(f"{k}={v}\n" for k, v in env.items()))
    return p


def test_validate_checks_the_voices_dir_and_default_voice(tmp_path: Path) -> None:
    d = tmp_path / "var/lib/voxcpm/voices"  # not under the real /var/lib/voxcpm: a warning, not an error
    rep = validate([env_file(tmp_path, VOXWS_VOICES_DIR=str(d), VOXWS_DEFAULT_VOICE="me")], None)
    assert any("VOXWS_DEFAULT_VOICE=me" in e and "does not exist yet" in e for e in rep.errors), rep.errors
    assert any("ReadWritePaths" in w for w in rep.warnings), rep.warnings
    VoiceStore(d).add(encode("wav", speechlike(2.0, 16000), 16000), TEXT, voice_id="other")
    rep = validate([env_file(tmp_path, VOXWS_VOICES_DIR=str(d), VOXWS_DEFAULT_VOICE="me")], None)
    assert any("there is none by that id" in e for e in rep.errors), rep.errors
    VoiceStore(d).add(encode("wav", speechlike(2.0, 16000), 16000), TEXT, voice_id="me")
    assert validate([env_file(tmp_path, VOXWS_VOICES_DIR=str(d), VOXWS_DEFAULT_VOICE="me")], None).ok
    rep = validate([env_file(tmp_path, VOXWS_VOICES_DIR="/home/me/voices")], None)
    assert any("ProtectHome" in e for e in rep.errors)
    rep = validate([env_file(tmp_path, VOXWS_DEFAULT_VOICE="a/b")], None)
    assert any("VOXWS_DEFAULT_VOICE=a/b: must be 1-64 characters" in e for e in rep.errors), rep.errors
    rep = validate([env_file(tmp_path, VOXWS_DEFAULT_VOICE="nobody")], None, check_voices=False)
    assert rep.ok and not rep.warnings
    r = runner.invoke(app, ["validate", str(env_file(tmp_path, VOXWS_DEFAULT_VOICE="nobody")), "--no-check-model"])
    assert r.exit_code == 1 and "VOXWS_DEFAULT_VOICE=nobody" in r.output
