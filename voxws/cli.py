"""`voxws serve`: every flag is also an environment variable (see voxws/config.py)."""

from __future__ import annotations

import ipaddress
import sys

import typer

from voxws import config, logs

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="voxws: real-time WebSocket text-to-speech for VoxCPM 1.5.")


@app.callback()
def main() -> None:
    """voxws: real-time WebSocket text-to-speech for VoxCPM 1.5."""


@app.command()
def serve(
    host: str = typer.Option(None, help="Listen address [env VOXWS_HOST, default 127.0.0.1]"),
    port: int = typer.Option(None, help="Listen port [env VOXWS_PORT, default 8081]"),
    engine: str = typer.Option(None, help="nanovllm or synthetic [env VOXWS_ENGINE, default nanovllm]"),
    group: str = typer.Option(None, help="Group name [env VOXWS_GROUP, default group0]"),
    model_path: str = typer.Option(None, help="Model directory [env VOXCPM_MODEL_PATH]"),
    log_format: str = typer.Option(None, help="json or console [env VOXWS_LOG_FORMAT]"),
) -> None:
    """Serve the voxws.v1 WebSocket protocol on one GPU group (or the synthetic engine).

    Example: voxws serve --engine synthetic --port 8081
    """
    overrides = {"VOXWS_HOST": host, "VOXWS_PORT": port, "VOXWS_ENGINE": engine, "VOXWS_GROUP": group,
                 "VOXCPM_MODEL_PATH": model_path, "VOXWS_LOG_FORMAT": log_format}
    try:
        settings = config.load(overrides=overrides)
    except config.ConfigError as e:
        for line in e.problems:
            print(f"voxws: invalid setting: {line}", file=sys.stderr)
        raise typer.Exit(2) from None
    logs.configure(settings.log_format)
    if not _loopback(settings.host) and not settings.auth_token_file:
        logs.log.warning("open_bind", host=settings.host,
                         advice="listening beyond loopback without VOXWS_AUTH_TOKEN_FILE: anyone who can reach "
                                "this port can use the GPUs")
    from voxws.server import run

    raise typer.Exit(run(settings))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may resolve to anything


@app.command("config")
def show_config() -> None:
    """Print every setting, its environment variable, default and rule."""
    for f in config.FIELDS:
        print(f"{f.env:36} default={f.default!s:12} {f.help}; must be {f.rule}")
