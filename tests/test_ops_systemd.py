"""End to end on a real systemd: voxws-ops install, start, serve, drain, restart, watchdog, journal.

A Debian bookworm tree boots under systemd-nspawn (tests/ops_fixtures/nspawn.py); voxws is
pip-installed into /opt/voxws inside it, as docs/deploy.md tells an operator to do, and
`voxws-ops install` runs there against the container's own systemd. Both groups use the synthetic
engine. Needs root, systemd-container and debootstrap (bin/test installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops_fixtures import nspawn

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(600)]
PROBE = str(Path(__file__).parent / "ops_fixtures" / "wsprobe.py")
LONG_TEXT = "这是一个很长的句子，用来测试停止服务时的排空。" * 5  # ~6 s of streaming at 40 ms a step


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nspawn.Container]:
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: the systemd end-to-end test needs root (systemd-nspawn, debootstrap); "
                    "run bin/test as root")
    missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter") if not shutil.which(t)]
    assert not missing, f"missing {missing}: apt-get install systemd-container debootstrap util-linux"
    work = tmp_path_factory.mktemp("nspawn")
    wheel_dir = nspawn.wheels(work / "wheels")
    c = nspawn.Container(nspawn.debian_tree(), work, binds={str(wheel_dir): "/wheels"})
    try:
        c.run("python3 -m venv /opt/voxws && "
              "/opt/voxws/bin/pip install -q --no-index --find-links /wheels voxws-server", timeout=300)
        yield c
    finally:
        c.stop()


def write_wav(path: Path) -> None:
    """Two seconds of a voiced tone, 16 kHz 16-bit mono."""
    import numpy as np

    t = np.arange(32000) / 16000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((8000 * np.sin(2 * np.pi * 180 * t)).astype("<i2").tobytes())


def probe(c: nspawn.Container, port: int, text: str = "你好，世界。", *flags: str) -> subprocess.Popen[str]:
    return c.host_in_netns([sys.executable, PROBE, f"ws://127.0.0.1:{port}/v1/tts", text, *flags],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def summary(p: subprocess.Popen[str]) -> dict:
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def assert_speaks(c: nspawn.Container, port: int, group: str) -> None:
    got = summary(probe(c, port))
    assert got["ready"]["group"] == group and got["start"] is not None
    assert got["frames"] > 0 and got["done"]["chunks"] == got["frames"], got


def wait_for(c: nspawn.Container, unit: str, pred, what: str, timeout: float = 150) -> dict[str, str]:
    end = time.monotonic() + timeout
    props: dict[str, str] = {}
    while time.monotonic() < end:
        props = c.show(unit, "ActiveState", "SubState", "NRestarts", "MainPID", "Result")
        if pred(props):
            return props
        time.sleep(0.5)
    raise AssertionError(f"{unit}: {what} not seen within {timeout} s; last {props}\n"
                         + c.run(f"journalctl -u {unit} --no-pager -n 40", check=False).stdout)


def test_install_start_serve_drain_restart_watchdog_journal(box: nspawn.Container) -> None:
    c = box
    # 1. Install with the container's real systemd: user, units, env files, daemon-reload, enable.
    out = c.run("voxws-ops install --gpus 0,1,2,3 --group-size 2 --base-port 8081 --engine synthetic "
                "--exec /opt/voxws/bin/voxws").stdout
    assert "systemctl daemon-reload" in out and "verify:" not in out, out
    assert c.run("id -u voxcpm").returncode == 0
    assert c.run("stat -c '%a %U:%G' /etc/voxcpm/group0.env").stdout.strip() == "640 root:voxcpm"
    enabled = c.run("systemctl is-enabled voxcpm.target voxcpm@group0 voxcpm@group1").stdout.split()
    assert enabled == ["enabled"] * 3
    # The admin's edits (test settings) survive a re-install, which shows the diff and refuses.
    c.run("for g in group0 group1; do printf 'VOXWS_SYNTHETIC_STEP_BASE_MS=40\\n"
          "VOXWS_TEST_HANG_ON_SIGNAL=1\\n' >> /etc/voxcpm/$g.env; done")
    again = c.run("voxws-ops install --gpus 0,1,2,3 --group-size 2 --base-port 8081 --engine synthetic "
                  "--exec /opt/voxws/bin/voxws", check=False)
    assert again.returncode == 1 and "-VOXWS_TEST_HANG_ON_SIGNAL=1" in again.stdout, \
        again.stdout + again.stderr
    assert "VOXWS_TEST_HANG_ON_SIGNAL=1" in c.run("cat /etc/voxcpm/group1.env").stdout
    assert c.run("voxws-ops validate /etc/voxcpm").returncode == 0

    # 2. Start everything; Type=notify makes `start` return once both servers are ready.
    c.run("systemctl start voxcpm.target", timeout=300)
    status = c.run("voxws-ops status --json")
    rows = json.loads(status.stdout)
    assert [(r["group"], r["readyz"]) for r in rows] == [("group0", "200 ready"), ("group1", "200 ready")]
    assert all(r["state"] == "active (running)" and r["status"].startswith("serving") for r in rows), rows
    assert_speaks(c, 8081, "group0")
    assert_speaks(c, 8082, "group1")
    assert c.run("systemd-analyze security --no-pager --threshold=20 voxcpm@group0.service").returncode == 0
    # The unit made the voice store every group shares; voxws-ops writes it while they run, as its owner.
    assert c.run("stat -c '%U:%G' /var/lib/voxcpm/voices").stdout.strip() == "voxcpm:voxcpm"
    write_wav(c.dir / "root/me.wav")
    c.run("voxws-ops voices add /root/me.wav --text 'hello there' --id me")
    owners = c.run("stat -c '%U' /var/lib/voxcpm/voices/me /var/lib/voxcpm/voices/me/audio.wav").stdout.split()
    assert owners == ["voxcpm", "voxcpm"]
    assert [v["id"] for v in json.loads(c.run("voxws-ops voices list --json").stdout)] == ["me"]

    # 3. Stopping the groups lets the stream in flight finish; new contexts are refused meanwhile.
    streaming = probe(c, 8081, LONG_TEXT, "--announce", "--speak-again")
    assert streaming.stdout is not None and streaming.stdout.readline().strip() == "streaming"
    c.run("systemctl stop 'voxcpm@*.service'", timeout=150)  # returns after the drain
    got = summary(streaming)
    assert got["going_away"] is not None and got["done"] is not None, got
    assert got["done"]["chunks"] == got["frames"] and got["close_code"] == 1001
    assert [e["code"] for e in got["errors"]] == ["shutting_down"]
    active = c.run("systemctl is-active voxcpm@group0 voxcpm@group1", check=False).stdout.split()
    assert active == ["inactive"] * 2
    # With the groups stopped, voxws-ops still manages the voices.
    c.run("voxws-ops voices remove me && voxws-ops voices add /root/me.wav --text 'hello there' --id me2")
    assert [v["id"] for v in json.loads(c.run("voxws-ops voices list --json").stdout)] == ["me2"]

    # 4. A killed server is restarted; a hung event loop is caught by the watchdog (both at once).
    c.run("systemctl start voxcpm.target", timeout=300)
    pid0 = c.show("voxcpm@group0", "MainPID")["MainPID"]
    c.run("systemctl kill -s SIGKILL --kill-whom=main voxcpm@group0")
    c.run("systemctl kill -s SIGUSR1 --kill-whom=main voxcpm@group1")  # VOXWS_TEST_HANG_ON_SIGNAL
    p0 = wait_for(c, "voxcpm@group0", lambda p: p["NRestarts"] == "1" and p["ActiveState"] == "active",
                  "a restart after SIGKILL")
    assert p0["MainPID"] != pid0
    wait_for(c, "voxcpm@group1", lambda p: p["NRestarts"] == "1" and p["ActiveState"] == "active",
             "a restart after the watchdog fired")
    journal1 = c.run("journalctl -u voxcpm@group1 --no-pager -o cat").stdout
    assert "Watchdog timeout" in journal1 and "Failed with result 'watchdog'" in journal1, journal1[-3000:]
    assert_speaks(c, 8081, "group0")
    assert_speaks(c, 8082, "group1")

    # 5. The journal carries the server's structured lines, tagged with the group.
    journal = c.run("journalctl -u voxcpm@group0 -o json --no-pager").stdout
    ours = [e for e in map(json.loads, journal.splitlines()) if e.get("SYSLOG_IDENTIFIER") == "voxcpm-group0"]
    events = [json.loads(m).get("event") for e in ours if (m := str(e.get("MESSAGE", ""))).startswith("{")]
    assert "listening" in events and "draining" in events, events

    # 6. Uninstall stops the groups and leaves nothing behind.
    c.run("voxws-ops uninstall --purge", timeout=150)
    assert c.run("systemctl list-unit-files 'voxcpm*' --no-legend", check=False).stdout.strip() == ""
    assert c.run("ls /etc/voxcpm /var/lib/voxcpm /etc/sysusers.d/voxcpm.conf", check=False).returncode != 0
    assert c.run("id voxcpm", check=False).returncode != 0
