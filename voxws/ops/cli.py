"""voxws-ops: plan, render, validate, install and watch one systemd service per GPU group."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from voxws import sizing
from voxws.cli import version_option
from voxws.ops import install as inst
from voxws.ops import nginx, plan, render, validate
from voxws.ops import voices as voices_ops

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(voices_ops.app, name="voices")
# Tables keep their columns when piped (rich would assume 80 columns).
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Gpus = Annotated[str, typer.Option("--gpus", help="physical GPU indices (nvidia-smi), e.g. 3,4,5,6: "
                                                     "each group's CUDA_VISIBLE_DEVICES")]
GroupSize = Annotated[int, typer.Option(help="GPUs per group (one voxws serve process each; VOXCPM_DEVICES "
                                                 "0..n-1)")]
BasePort = Annotated[int, typer.Option(help="VOXWS_PORT of the first group; the next groups count up")]
ModelPath = Annotated[str | None, typer.Option(help="VOXCPM_MODEL_PATH: VoxCPM 1.5 model directory (required "
                                                       "for nanovllm)")]
Util = Annotated[float, typer.Option(help="VOXCPM_GPU_MEMORY_UTILIZATION, 0.4 to 0.95")]
Seqs = Annotated[int, typer.Option(help="VOXCPM_MAX_NUM_SEQS: sequences per engine step per GPU")]
TextChars = Annotated[int, typer.Option(help="longest text (characters) one request must fit: sizes "
                                             "VOXCPM_MAX_MODEL_LEN")]
Exec = Annotated[str | None, typer.Option(
    "--exec", help="the voxws binary the unit runs [default: the voxws next to this voxws-ops, else "
                   "/opt/voxws/bin/voxws]")]
User = Annotated[str, typer.Option(help="system user the service runs as")]
Engine = Annotated[str, typer.Option(help="VOXWS_ENGINE: nanovllm (GPU) or synthetic (CPU stand-in, for tests)")]
Host = Annotated[str, typer.Option(help="VOXWS_HOST: listen address of every group")]


@app.callback()
def main(version: bool = version_option("voxws-ops")) -> None:
    """voxws-ops: plan, render, validate, install and watch one systemd service per GPU group."""


def _fail(lines: str | list[str], code: int = 1) -> None:
    for line in [lines] if isinstance(lines, str) else lines:
        err.print(f"error: {line}", markup=False)
    raise typer.Exit(code)


def _options(gpus: str, group_size: int, base_port: int, model_path: str | None, util: float,
             max_num_seqs: int, max_text_chars: int, exec_path: str | None, user: str, engine: str,
             host: str) -> plan.Options:
    try:
        return plan.Options(gpus=plan.parse_gpus(gpus), group_size=group_size, base_port=base_port,
                            model_path=model_path, util=util, max_num_seqs=max_num_seqs,
                            max_text_chars=max_text_chars, exec_path=exec_path or plan.default_exec(),
                            user=user, engine=engine, host=host)
    except plan.PlanError as e:
        _fail(e.problems, 2)
        raise  # unreachable


def _render(opts: plan.Options) -> dict[str, str]:
    try:
        return render.render(opts)
    except plan.PlanError as e:
        _fail(e.problems, 2)
        raise


@app.command("plan")
def plan_cmd(gpus: Gpus, group_size: GroupSize = 2, base_port: BasePort = 8081, model_path: ModelPath = None,
             util: Util = 0.4, max_num_seqs: Seqs = 128, max_text_chars: TextChars = 300,
             exec_path: Exec = None, user: User = "voxcpm", engine: Engine = "nanovllm",
             host: Host = "127.0.0.1") -> None:
    """Show the groups, their GPUs and ports, and the settings `render` would write.

    Example: voxws-ops plan --gpus 3,4,5,6 --group-size 2 --base-port 8081 --model-path /opt/voxcpm/VoxCPM1.5
    """
    opts = _options(gpus, group_size, base_port, model_path, util, max_num_seqs, max_text_chars, exec_path,
                    user, engine, host)
    try:
        groups = plan.check(opts)
    except plan.PlanError as e:
        _fail(e.problems, 2)
    t = Table("group", "unit", "GPUs (nvidia-smi)", "port", "env file")
    for g in groups:
        t.add_row(g.name, f"voxcpm@{g.name}.service", ",".join(map(str, g.gpus)), str(g.port),
                  f"/etc/voxcpm/{g.name}.env")
    out.print(t)
    for g in groups:
        out.print(f"\n[bold]/etc/voxcpm/{g.name}.env[/bold]")
        for key, value, comment in plan.env_entries(g, opts):
            out.print(f"  {key}={value}", markup=False, end="")
            out.print(f"   [dim]# {comment}[/dim]")
    out.print(f"\nunit: ExecStart={opts.exec_path} serve, User={opts.user}; "
              f"max_model_len {plan.max_model_len(opts)} fits {opts.max_text_chars}-character texts")


@app.command("render")
def render_cmd(gpus: Gpus, out_dir: Annotated[Path, typer.Option("--out", help="output directory")],
               group_size: GroupSize = 2, base_port: BasePort = 8081, model_path: ModelPath = None,
               util: Util = 0.4, max_num_seqs: Seqs = 128, max_text_chars: TextChars = 300,
               exec_path: Exec = None, user: User = "voxcpm", engine: Engine = "nanovllm",
               host: Host = "127.0.0.1") -> None:
    """Write OUT/systemd/voxcpm@.service, OUT/systemd/voxcpm.target and OUT/env/<group>.env.

    Example: voxws-ops render --gpus 3,4,5,6 --group-size 2 --base-port 8081
    --model-path /opt/voxcpm/VoxCPM1.5 --out ./deploy
    """
    opts = _options(gpus, group_size, base_port, model_path, util, max_num_seqs, max_text_chars, exec_path,
                    user, engine, host)
    for p in render.write(_render(opts), out_dir):
        out.print(f"wrote {p}", markup=False)


@app.command("validate")
def validate_cmd(paths: Annotated[list[Path], typer.Argument(help="env files or directories of them")],
                 max_text_chars: TextChars = 300,
                 gpu_memory_gb: Annotated[float | None, typer.Option(
                     help="memory of one card in GB: also check the absolute budget")] = None,
                 check_model: Annotated[bool, typer.Option(
                     help="check the model directory (off when validating on another machine)")] = True,
                 check_voices: Annotated[bool, typer.Option(
                     help="check the voices directory and the default voice (off on another machine)")] = True,
                 strict: Annotated[bool, typer.Option(help="warnings fail too")] = False) -> None:
    """Check env files with the server's own rules plus the deployment's (GPUs, ports, model, sizing).

    Example: voxws-ops validate /etc/voxcpm --max-text-chars 300 --gpu-memory-gb 80
    """
    rep = validate.validate(paths, max_text_chars, gpu_memory_gb, check_model, check_voices)
    for w in rep.warnings:
        err.print(f"warning: {w}", markup=False)
    for e in rep.errors:
        err.print(f"error: {e}", markup=False)
    if rep.errors or (strict and rep.warnings):
        raise typer.Exit(1)
    out.print(f"ok: {len(rep.files)} env file(s): {', '.join(str(f) for f in rep.files)}", markup=False)


@app.command("recommend")
def recommend_cmd(gpu_memory_gb: Annotated[float, typer.Option(help="memory of one card in GB, e.g. 80")],
                  max_text_chars: TextChars = 300,
                  concurrency: Annotated[int, typer.Option(
                      help="streams at once per GPU (VOXCPM_MAX_NUM_SEQS)")] = 128) -> None:
    """Utilization, seqs and len for a card, with the memory estimate behind them.

    Example: voxws-ops recommend --gpu-memory-gb 80 --max-text-chars 300 --concurrency 128
    """
    if not 1 <= concurrency <= 512:
        _fail(f"--concurrency={concurrency}: must be an integer from 1 to 512 (VOXCPM_MAX_NUM_SEQS)", 2)
    if not 1 <= max_text_chars <= 100_000 or gpu_memory_gb <= 0:
        _fail("--max-text-chars must be 1 to 100000 and --gpu-memory-gb positive", 2)
    length = sizing.min_max_model_len(max_text_chars)
    base = sizing.memory_estimate_gb(0, length, per_seq_overhead_gb=0)  # weights + VAE + fixed activations
    per_seq_kv = sizing.kv_cache_gb(1, length)
    outside = sizing.PER_SEQ_OVERHEAD_GB * concurrency
    t = Table("util", "engine budget GB", f"seqs x {length} that fit", "card total GB", "headroom GB",
              "verdict", title=f"{gpu_memory_gb:g} GB card, texts up to {max_text_chars} chars "
                               f"(max_model_len {length}), {concurrency} streams per GPU")
    pick = None
    for i in range(8, 20):
        util = i / 20
        budget = util * gpu_memory_gb
        fit = max(0, math.floor((budget - base) / per_seq_kv))
        headroom = gpu_memory_gb * (1 - util) - outside
        verdict = ("KV short" if fit < concurrency else
                   "OOM risk" if headroom < validate.SAFE_HEADROOM_GB else "ok")
        if verdict == "ok" and pick is None:
            pick = util
            verdict = "ok, pick"
        t.add_row(f"{util:.2f}", f"{budget:.1f}", str(fit), f"{budget + outside:.1f}", f"{headroom:.1f}",
                  verdict)
    out.print(t)
    need = sizing.memory_estimate_gb(concurrency, length)
    out.print("KV short: the budget holds fewer full-length sequences than streams; OOM risk: less than "
              f"{validate.SAFE_HEADROOM_GB:g} GB left beyond the budget and the per-stream activations "
              "(util 0.9 on an 80 GB H100 came within 0.6 GB of out-of-memory).")
    weights = sizing.WEIGHTS_GB + sizing.VAE_GB
    out.print(f"needed per card at full load: {need:.1f} GB (weights + VAE {weights:.2f}, KV "
              f"{sizing.kv_cache_gb(concurrency, length):.2f}, activations {sizing.FIXED_OVERHEAD_GB:.1f} + "
              f"{outside:.1f} for {concurrency} streams); the engine fills its whole budget with KV blocks")
    if pick is None:
        _fail(f"no utilization from 0.40 to 0.95 serves {concurrency} streams of {length} positions on a "
              f"{gpu_memory_gb:g} GB card with {validate.SAFE_HEADROOM_GB:g} GB to spare: lower "
              "--concurrency or --max-text-chars")
    out.print(f"VOXCPM_GPU_MEMORY_UTILIZATION={pick:.2f}\nVOXCPM_MAX_NUM_SEQS={concurrency}\n"
              f"VOXCPM_MAX_MODEL_LEN={length}", markup=False)


@app.command("install")
def install_cmd(gpus: Annotated[str | None, typer.Option("--gpus", help="physical GPU indices, e.g. 3,4,5,6: "
                                                                       "each group's CUDA_VISIBLE_DEVICES (or "
                                                                       "--from)")] = None,
                from_dir: Annotated[Path | None, typer.Option(
                    "--from", help="a `render --out` directory")] = None,
                root: Annotated[Path, typer.Option(help="install into this directory (staging; no running "
                                                        "systemd needed)")] = Path("/"),
                force: Annotated[bool, typer.Option(
                    help="overwrite env files that differ (an admin's edits)")] = False,
                group_size: GroupSize = 2, base_port: BasePort = 8081, model_path: ModelPath = None,
                util: Util = 0.4, max_num_seqs: Seqs = 128, max_text_chars: TextChars = 300,
                exec_path: Exec = None, user: User = "voxcpm", engine: Engine = "nanovllm",
                host: Host = "127.0.0.1") -> None:
    """Create the user, write units and env files, verify, daemon-reload, enable the target and each group.

    Example: sudo voxws-ops install --gpus 3,4,5,6 --group-size 2 --base-port 8081
    --model-path /opt/voxcpm/VoxCPM1.5 && sudo systemctl start voxcpm.target
    """
    if (gpus is None) == (from_dir is None):
        _fail("give either --gpus (and the other render options) or --from DIR (a `render --out` dir)", 2)
    try:
        if from_dir is not None:
            files = inst.read_rendered(from_dir)
        else:
            files = _render(_options(gpus or "", group_size, base_port, model_path, util, max_num_seqs,
                                     max_text_chars, exec_path, user, engine, host))
        inst.install(files, root, force, say=lambda s: out.print(s, markup=False))
    except (inst.InstallError, OSError) as e:
        _fail(str(e).splitlines())


@app.command("uninstall")
def uninstall_cmd(root: Annotated[Path, typer.Option(
                      help="the directory install --root wrote to")] = Path("/"),
                  purge: Annotated[bool, typer.Option(help="also delete the user, /var/lib/voxcpm and "
                                                           "/var/cache/voxcpm")] = False) -> None:
    """Stop and disable every group, remove the units, env files and user definition install wrote.

    Example: sudo voxws-ops uninstall   (or: voxws-ops uninstall --root ./staging)
    """
    try:
        inst.uninstall(root, purge, say=lambda s: out.print(s, markup=False))
    except (inst.InstallError, OSError) as e:
        _fail(str(e).splitlines())


@app.command("status")
def status_cmd(root: Annotated[Path, typer.Option(help="where the env files are")] = Path("/"),
               as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
               ) -> None:
    """Per group: the unit's state and the server's /readyz. Exit 0 only when every group is ready.

    Example: voxws-ops status
    """
    rows = inst.status(root)
    if not rows:
        _fail(f"no groups installed (no {root / 'etc/voxcpm'}/*.env): `voxws-ops install` first", 3)
    if as_json:
        out.print(inst.status_json(rows), markup=False)
    else:
        t = Table("group", "GPUs", "port", "unit state", "restarts", "/readyz", "status")
        for r in rows:
            t.add_row(r["group"], r["gpus"], r["port"], r["state"], r.get("restarts", ""), r["readyz"],
                      r.get("status", ""))
        out.print(t)
    if not all(r["readyz"].startswith("200") for r in rows):
        raise typer.Exit(3)


@app.command("render-nginx")
def render_nginx_cmd(listen: Annotated[str, typer.Option(help="PORT or HOST:PORT nginx listens on")],
                     out_file: Annotated[Path, typer.Option("--out", help="file to write, - for stdout")],
                     upstream: Annotated[list[str] | None, typer.Option(
                         help="a group's HOST:PORT (repeat, or comma-separated)")] = None,
                     from_env: Annotated[list[Path] | None, typer.Option(help="env files or directories: "
                                                                             "their VOXWS_HOST:VOXWS_PORT")]
                     = None,
                     name: Annotated[str, typer.Option(help="nginx upstream name")] = "voxws",
                     tls_cert: Annotated[str | None, typer.Option(
                         help="certificate chain (PEM): serve TLS (wss://) on --listen, e.g. 443")] = None,
                     tls_key: Annotated[str | None, typer.Option(help="private key (PEM) of --tls-cert")] = None,
                     server_name: Annotated[str, typer.Option(
                         help="nginx server_name, e.g. the certificate's host name")] = "_") -> None:
    """One address in front of every group and host: least_conn, WebSocket upgrade, failover on 503.

    Example: voxws-ops render-nginx --listen 8080 --upstream 127.0.0.1:8081 --upstream 127.0.0.1:8082
    --upstream 10.0.0.6:8081 --out /etc/nginx/conf.d/voxws.conf

    With TLS (clients use wss://tts.example.com/v1/tts): voxws-ops render-nginx --listen 443
    --tls-cert /etc/letsencrypt/live/tts.example.com/fullchain.pem
    --tls-key /etc/letsencrypt/live/tts.example.com/privkey.pem --server-name tts.example.com
    --from-env /etc/voxcpm --out /etc/nginx/conf.d/voxws.conf
    """
    try:
        given = [u for arg in upstream or [] for u in arg.split(",") if u.strip()]
        ups = [nginx.parse_addr(u, "--upstream") for u in given]
        ups += nginx.upstreams_from_env(from_env or [])
        text = nginx.render_nginx(nginx.parse_listen(listen), ups, name, server_name, tls_cert, tls_key)
    except nginx.NginxError as e:
        _fail(str(e).splitlines(), 2)
    if str(out_file) == "-":
        sys.stdout.write(text)
        return
    render.atomic_write(out_file, text)
    out.print(f"wrote {out_file}: {len(ups)} upstream(s) behind {'TLS ' if tls_cert else ''}:{listen}",
              markup=False)


if __name__ == "__main__":
    app()
