"""The docs name only what exists (issue 17 item 9): every command, subcommand, flag and environment
variable written in README.md and docs/*.md; every pip line installs this project, not the PyPI
project that owns the name `voxws`; LICENSE and CHANGELOG match pyproject."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from tests.conftest import ROOT
from voxws import __version__, config
from voxws.bench.cli import app as bench_app
from voxws.cli import app as voxws_app
from voxws.ops.cli import app as ops_app

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
APPS = {"voxws": voxws_app, "voxws-ops": ops_app, "voxws-bench": bench_app}
PYPROJECT_TEXT = (ROOT / "pyproject.toml").read_text()


def project(key: str) -> str:
    m = re.search(rf'^{key} = "([^"]+)"', PYPROJECT_TEXT, re.M)  # tomllib is 3.11+; we support 3.10
    assert m, key
    return m.group(1)
# Flags of other tools that the docs quote on their own (pip, huggingface-cli, systemctl, nginx ...).
OTHER_FLAGS = {"--no-build-isolation", "--local-dir", "--no-deps", "--now", "--no-index", "--find-links", "-w",
               "--recursive-errors", "--man", "--autoplay-policy",
               "--server-cmd",  # bench/overhead.py
               "--use-file-for-fake-audio-capture"}  # Chromium
# What a pip line may install besides this project: libraries the docs' own examples use.
OTHER_PACKAGES = {"websockets", "flash-attn", "matplotlib", "nano-vllm-voxcpm==2.0.5", "pydantic", "xxhash"}


NESTED = {"voxws-ops voices"}  # command groups inside a command: `voxws-ops voices add ...`


def command(g: TyperGroup, sub: str) -> Any:
    """The (sub)command at a path such as "voices add", or None."""
    cmd: Any = g
    for word in sub.split():
        cmd = cmd.commands.get(word) if isinstance(cmd, TyperGroup) else None
        if cmd is None:
            return None
    return cmd


def all_commands(cmd: Any) -> list[Any]:
    return [cmd, *(c for sub in getattr(cmd, "commands", {}).values() for c in all_commands(sub))]


@cache
def group(exe: str) -> TyperGroup:
    cmd = typer.main.get_command(APPS[exe])
    assert isinstance(cmd, TyperGroup)
    return cmd


def options(cmd: Any) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


def code_spans(text: str) -> list[tuple[str, str]]:
    """(where, code) for every fenced block line (backslash continuations joined) and inline span."""
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            out.append(("block", line))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    out += [("inline", s) for s in re.findall(r"`([^`\n]+)`", prose)]
    return out


def invocations(code: str) -> list[tuple[str, str, list[str]]]:
    """(command, subcommand, flags) of each voxws/voxws-ops/voxws-bench/bin/serve call in one code line."""
    code = re.sub(r"\s#\s.*$", "", code)  # a shell comment
    out = []
    for part in re.split(r"&&|\|\||[|;()]", code):
        m = re.search(r"(?:^|[\s/])(voxws-ops|voxws-bench|voxws|bin/serve)(?=\s|$)(.*)", part)
        if not m:
            continue
        exe, rest = m.group(1), m.group(2).split()
        if exe == "bin/serve":
            out.append(("voxws", "serve", [w for w in rest if w.startswith("--")]))
            continue
        words = [w for w in rest if not w.startswith("-")]
        sub = " ".join(words[:2]) if len(words) > 1 and f"{exe} {words[0]}" in NESTED else \
            next((w for w in rest if re.fullmatch(r"[a-z][a-z-]*", w)), "")
        out.append((exe, sub, [w.split("=")[0] for w in rest if re.match(r"--?[a-z]", w)]))
    return out


def test_every_command_and_flag_in_the_docs_exists() -> None:
    bad = []
    for doc in DOCS:
        for _, code in code_spans(doc.read_text()):
            for exe, sub, flags in invocations(code):
                g = group(exe)
                if sub and command(g, sub) is None:
                    bad.append(f"{doc.name}: `{code}`: {exe} has no command {sub!r}")
                    continue
                allowed = options(g) | (options(command(g, sub)) if sub else set())
                bad += [f"{doc.name}: `{code}`: {exe} {sub} has no option {f}" for f in flags if f not in allowed]
    assert not bad, "\n".join(bad)


def test_every_flag_quoted_alone_exists_somewhere() -> None:
    ours = {o for exe in APPS for c in all_commands(group(exe)) for o in options(c)} | {"--version"}
    bad = []
    for doc in DOCS:
        for where, code in code_spans(doc.read_text()):
            if where == "inline" and code.startswith("--"):  # e.g. `--exec PATH` in prose about voxws-ops
                for flag in re.findall(r"(?:^|\s)(--[a-z][a-z0-9-]*)", code):
                    if flag not in ours and flag not in OTHER_FLAGS:
                        bad.append(f"{doc.name}: `{code}`: no command has {flag}")
    assert not bad, "\n".join(bad)


def test_every_environment_variable_in_the_docs_exists() -> None:
    known = set(config.FIELD_BY_ENV) | config.OTHER_ENV
    bad = [f"{doc.name}: {v}" for doc in DOCS
           for v in sorted(set(re.findall(r"\b(?:VOXWS|VOXCPM)_[A-Z0-9_]*[A-Z0-9]\b", doc.read_text())))
           if v not in known]
    assert not bad, bad


def test_the_distribution_is_not_the_pypi_project_named_voxws() -> None:
    # "voxws" on PyPI (1.0.1) is an unrelated keyword-spotting package that also installs `import voxws`.
    name = project("name")
    assert re.sub(r"[-_.]+", "-", name).lower() != "voxws"
    scripts = PYPROJECT_TEXT.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert set(re.findall(r"^([a-z-]+) = ", scripts, re.M)) == {"voxws", "voxws-ops", "voxws-bench"}


def test_every_pip_line_in_the_docs_installs_this_project_or_a_named_library() -> None:
    name = project("name")
    wheel = name.replace("-", "_")
    bad = []
    for doc in DOCS:
        for _, code in code_spans(doc.read_text()):
            for m in re.finditer(r"pip install((?:\s+[^\s#&|;]+)+)", code):
                targets = [t.strip("'\"") for t in m.group(1).split() if not t.startswith("-")]
                for t in targets:
                    local = t.startswith((".", "/", "dist/", "$")) or t.startswith(f"{wheel}-")
                    if not local and t not in OTHER_PACKAGES:
                        bad.append(f"{doc.name}: `{code}`: installs {t!r} from an index")
                    if local and ".whl" in t and f"{wheel}-" not in t:
                        bad.append(f"{doc.name}: `{code}`: a wheel that is not {wheel}-*.whl")
    assert not bad, "\n".join(bad)
    readme = (ROOT / "README.md").read_text()
    assert "pip wheel --no-deps -w dist ." in readme  # the documented way to build the wheel


def test_license_and_changelog() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert project("license") == "Apache-2.0"
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 11000
    version = project("version")
    assert version == __version__
    first = re.search(r"^## \[?(\d+\.\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert first and first.group(1) == version


def test_the_documented_wheel_command_builds_voxws_server_with_the_three_commands(tmp_path: Path) -> None:
    # Built from a copy, as tests/ops_fixtures/nspawn.py does: a build in the tree leaves build/ behind.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "voxws", src / "voxws", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src)
    cmd = re.search(r"^python3 -m pip wheel --no-deps -w dist \.", (ROOT / "README.md").read_text(), re.M)
    assert cmd
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", "dist", "."], cwd=src,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    version = project("version")
    wheel = src / "dist" / f"voxws_server-{version}-py3-none-any.whl"
    assert [p.name for p in (src / "dist").iterdir()] == [wheel.name]
    with zipfile.ZipFile(wheel) as z:
        info = f"voxws_server-{version}.dist-info"
        meta = z.read(f"{info}/METADATA").decode()
        entry = z.read(f"{info}/entry_points.txt").decode()
        names = z.namelist()
    assert "\nName: voxws-server\n" in meta and "Provides-Extra: gpu" in meta and "Provides-Extra: bench" in meta
    for script in ("voxws = voxws.cli:app", "voxws-ops = voxws.ops.cli:app", "voxws-bench = voxws.bench.cli:app"):
        assert script in entry
    assert "voxws/web/index.html" in names or any(n.startswith("voxws/web/") for n in names)
    assert "voxws/ops/templates/voxcpm@.service" in names and f"{info}/licenses/LICENSE" in names
