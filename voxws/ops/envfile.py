"""Read and write systemd EnvironmentFile= files (KEY=VALUE lines, '#'/';' comments).

We refuse what systemd would only warn about and skip (a line without '='), so a typo never
silently drops a setting.
"""

from __future__ import annotations

import re
from pathlib import Path

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvFileError(ValueError):
    pass


def parse(text: str, source: str = "") -> dict[str, str]:
    """Parse env-file text into {key: value}; the last assignment of a key wins, as in systemd."""
    out, problems = parse_lenient(text, source)
    if problems:
        raise EnvFileError("\n".join(problems))
    return out


def parse_lenient(text: str, source: str = "") -> tuple[dict[str, str], list[str]]:
    """The good lines and one problem per bad line, so that a checker can go on with the rest."""
    out: dict[str, str] = {}
    problems: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        n, line = i + 1, lines[i].strip()
        i += 1
        while line.endswith("\\") and i < len(lines):  # systemd joins backslash-continued lines
            line = line[:-1] + lines[i].strip()
            i += 1
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not KEY_RE.match(key):
            problems.append(f"{source}:{n}: {line!r}: must be KEY=VALUE with KEY of [A-Za-z0-9_] "
                            "(systemd would skip this line)")
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out, problems


def read(path: Path) -> dict[str, str]:
    return parse(path.read_text(encoding="utf-8"), str(path))


def read_lenient(path: Path) -> tuple[dict[str, str], list[str]]:
    return parse_lenient(path.read_text(encoding="utf-8"), str(path))


def render(header: list[str], entries: list[tuple[str, str, str]]) -> str:
    """Header comment lines, then per entry a '# comment' line (when given) and KEY=VALUE."""
    lines = [f"# {h}" if h else "#" for h in header]
    for key, value, comment in entries:
        lines.append("")
        if comment:
            lines.append(f"# {comment}")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"
