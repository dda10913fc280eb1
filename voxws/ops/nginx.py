"""render-nginx: one address in front of every GPU group (and host), as an http{}-context snippet."""

from __future__ import annotations

import re
from pathlib import Path

from voxws.ops import envfile
from voxws.ops.validate import env_files

ADDR_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
FAIL_TIMEOUT_S = 10


class NginxError(ValueError):
    pass


def parse_addr(raw: str, option: str) -> str:
    m = ADDR_RE.match(raw.strip())
    if not m or not 1 <= int(m.group(2)) <= 65535:
        raise NginxError(f"{option}={raw}: must be HOST:PORT with a port from 1 to 65535, e.g. 10.0.0.5:8081")
    return raw.strip()


def parse_listen(raw: str) -> str:
    if raw.isdigit() and 1 <= int(raw) <= 65535:
        return raw
    return parse_addr(raw, "--listen")


def upstreams_from_env(paths: list[Path]) -> list[str]:
    """HOST:PORT of each group's env file; a wildcard listen address means this host's loopback."""
    files, errors = env_files(paths)
    if errors:
        raise NginxError("\n".join(errors))
    out = []
    for f in files:
        env = envfile.read(f)
        host = env.get("VOXWS_HOST", "127.0.0.1")
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
        out.append(f"{host}:{env.get('VOXWS_PORT', '8081')}")
    return out


def check_tls(cert: str | None, key: str | None) -> list[str]:
    """Both or neither; absolute paths nginx can read as written (it resolves relative ones to its prefix)."""
    if (cert is None) != (key is None):
        return ["--tls-cert and --tls-key: give both (the certificate chain and its private key) or neither"]
    out = []
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is not None and (not path.startswith("/") or re.search(r"[\s;{}'\"]", path)):
            out.append(f"{option}={path}: must be an absolute path without spaces, quotes, ';' or braces")
    return out


def tls_lines(cert: str, key: str, name: str) -> str:
    return f"""
    # TLS: clients connect with wss:// (and https:// for /readyz, /metrics and the demo page).
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:{name}_tls:10m;
    ssl_session_timeout 1h;
"""


def render_nginx(listen: str, upstreams: list[str], name: str = "voxws", server_name: str = "_",
                 tls_cert: str | None = None, tls_key: str | None = None) -> str:
    if problems := check_tls(tls_cert, tls_key):
        raise NginxError("\n".join(problems))
    if not re.match(r"^[A-Za-z0-9_.*-]+$", server_name):
        raise NginxError(f"--server-name={server_name}: must be a host name such as tts.example.com (or _)")
    if not upstreams:
        raise NginxError("--upstream: must name at least one group as HOST:PORT (or give --from-env)")
    if len(set(upstreams)) != len(upstreams):
        raise NginxError(f"--upstream={','.join(upstreams)}: must not name a group twice")
    if not re.match(r"^[A-Za-z0-9_]+$", name):
        raise NginxError(f"--name={name}: must be letters, digits and _ (an nginx upstream name)")
    servers = "\n".join(f"    server {u} max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s;" for u in upstreams)
    return f"""\
# voxws: one address in front of every GPU group. Written by `voxws-ops render-nginx`.
# An http{{}}-context snippet: e.g. /etc/nginx/conf.d/{name}.conf, then `nginx -t && systemctl reload nginx`.

map $http_upgrade ${name}_connection {{
    default upgrade;
    ''      close;
}}

upstream {name} {{
    # A WebSocket session stays on its group; a new one goes to the group with the fewest open sessions.
    least_conn;
    # A group that refuses the connection or answers 503 (/readyz red: loading or draining) is left
    # out for {FAIL_TIMEOUT_S} s, and the handshake is retried on the next group (proxy_next_upstream).
{servers}
}}

server {{
    listen {listen}{" ssl" if tls_cert else ""};
    server_name {server_name};
{tls_lines(tls_cert, tls_key, name) if tls_cert and tls_key else ""}
    location / {{
        proxy_pass http://{name};
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection ${name}_connection;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_next_upstream error timeout http_502 http_503;
        proxy_connect_timeout 5s;
        # A session may stay open for long, with pauses between texts; audio goes out as it comes.
        proxy_read_timeout 3600s;
        proxy_send_timeout 3600s;
        proxy_buffering off;
    }}
}}
"""
