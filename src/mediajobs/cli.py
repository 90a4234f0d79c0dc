"""Command line: `mediajobs serve | migrate | config`. Flags -> Settings -> app.build."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from . import __version__, errors, logs, settings

console = Console(stderr=False, highlight=False, soft_wrap=True)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", help="TOML config file (keys as in the settings table; also MEDIAJOBS_CONFIG)."
    )
    p.add_argument(
        "--data-dir", help="Directory for the database and object bytes (default ./mediajobs-data)."
    )
    p.add_argument(
        "--database-url", help="SQLAlchemy URL of the metadata database (default SQLite in the data dir)."
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format", choices=["text", "json"], help="json: one JSON object per log line (default text)."
    )


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        metavar="URL",
        help="s3://bucket/optional/prefix: object bytes in an S3-compatible store (default: the data dir).",
    )
    p.add_argument("--s3-endpoint", metavar="URL", help="Endpoint of the S3-compatible service.")
    p.add_argument("--s3-region", help="Region S3 requests are signed for (default us-east-1).")
    p.add_argument("--s3-access-key", help="S3 access key id (prefer MEDIAJOBS_S3_ACCESS_KEY or AWS_*).")
    p.add_argument("--s3-secret-key", help="S3 secret key (prefer MEDIAJOBS_S3_SECRET_KEY or AWS_*).")


def _add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, help="Worker processes (default: one per core; 0: none).")
    p.add_argument("--lease-seconds", type=float, help="Lease of a running job (default 30).")
    p.add_argument("--job-timeout", type=float, help="Longest run time of a job in seconds (default 3600).")
    p.add_argument(
        "--hardware-encoder",
        choices=["off", "auto", "nvenc", "vaapi", "qsv"],
        help="Use a hardware video encoder when one works on this machine (default off).",
    )
    for name, kind in (
        ("image_max_bytes", int),
        ("image_max_pixels", int),
        ("image_max_side", int),
        ("image_max_frames", int),
        ("image_max_output_side", int),
        ("image_max_output_bytes", int),
        ("image_timeout", float),
        ("image_workers", int),
    ):
        default = settings.Settings.__dataclass_fields__[name].default
        help_text = settings.Settings.__dataclass_fields__[name].metadata["help"]
        p.add_argument(
            "--" + name.replace("_", "-"), type=kind, help=f"{help_text.rstrip('.')} (default {default})."
        )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="mediajobs", description="Tencent CI / COS compatible media job server."
    )
    ap.add_argument("--version", action="version", version=f"mediajobs {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="Run the API server.")
    _add_common(serve)
    _add_storage(serve)
    serve.add_argument("--host", help="Address to listen on (default 127.0.0.1).")
    serve.add_argument("--port", type=int, help=f"Port to listen on (default {settings.DEFAULT_PORT}).")
    serve.add_argument("--region", help="Region reported for buckets (default ap-guangzhou).")
    serve.add_argument(
        "--bucket",
        action="append",
        dest="buckets",
        metavar="NAME",
        help="A bucket that exists from the start (repeatable), e.g. examplebucket-1250000000.",
    )
    serve.add_argument("--default-bucket", help="Bucket for requests whose Host names none.")
    serve.add_argument("--secret-id", help="SecretId to accept (prefer MEDIAJOBS_SECRET_ID).")
    serve.add_argument("--secret-key", help="SecretKey to accept (prefer MEDIAJOBS_SECRET_KEY).")
    serve.add_argument("--credentials-file", help="File of 'SecretId SecretKey' lines.")
    serve.add_argument("--no-auth", action="store_true", default=None, help="Accept unsigned requests.")
    serve.add_argument("--tls-cert", help="PEM certificate: serve https.")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert.")
    serve.add_argument("--max-object-size", type=int, help="Largest single PUT or part, in bytes.")
    serve.add_argument(
        "--no-fsync",
        dest="fsync",
        action="store_false",
        default=None,
        help="Do not fsync writes (faster, loses acknowledged writes on power loss).",
    )
    _add_engine(serve)
    serve.add_argument("--time-offset", help="UTC offset of job and queue times, as +HHMM (default +0800).")
    serve.add_argument(
        "--test-controls",
        action="store_true",
        default=None,
        help="Honour the x-mediajobs-hold header that holds a new job in Running (for tests).",
    )

    worker = sub.add_parser("worker", help="Run workers only (no API), on the same data dir or database.")
    _add_common(worker)
    _add_storage(worker)
    _add_engine(worker)
    worker.add_argument("--child", action="store_true", help=argparse.SUPPRESS)

    mig = sub.add_parser("migrate", help="Create or upgrade the database schema, then exit.")
    _add_common(mig)

    cfg = sub.add_parser("config", help="Print every setting with its environment variable and default.")
    cfg.add_argument("--markdown", action="store_true", help="As a Markdown table (for the README).")
    return ap


def _overrides(ns: argparse.Namespace) -> dict[str, Any]:
    names = {f[0] for f in settings.describe()}
    return {k: v for k, v in vars(ns).items() if k in names and v is not None}


def main(argv: Sequence[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    if ns.command == "config":
        return _print_config(ns.markdown)
    try:
        conf = settings.load(_overrides(ns), config_file=ns.config)
    except (ValueError, OSError) as exc:
        console.print(f"[red]mediajobs: {exc}[/red]")
        return 2
    logs.setup(conf.log_level, conf.log_format)
    if ns.command == "migrate":
        from .db.engine import make_engine, migrate

        conf.data_dir.mkdir(parents=True, exist_ok=True)
        migrate(make_engine(conf.effective_database_url, fsync=conf.fsync))
        console.print("schema is up to date")
        return 0
    if ns.command == "worker":
        return _worker(conf, child=ns.child)
    return _serve(conf)


def _worker(conf: settings.Settings, *, child: bool) -> int:
    import signal
    import threading

    from .core import run_worker
    from .jobs.worker import Supervisor, die_with_parent

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if child:
        die_with_parent()
    count = settings.effective_workers(conf)
    if count <= 1 or child:
        run_worker(conf, stop)
        if child:
            # Stopped cleanly, its row in `workers` deleted: skip the interpreter's teardown
            # (a few tenths of a second of module finalization the supervisor would wait for).
            logs.flush()
            os._exit(0)
        return 0
    sup = Supervisor(count, {**os.environ, **settings.to_env(conf)})
    sup.start()
    console.print(f"mediajobs {__version__}: {count} worker processes on {conf.effective_database_url}")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        sup.stop()
    return 0


def _serve(conf: settings.Settings) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from .api.httpserver import SpelledHttpToolsProtocol
    from .app import build

    try:
        built = build(conf)
    except (ValueError, OSError, errors.MediaJobsError) as exc:
        console.print(f"[red]mediajobs: {exc}[/red]")
        return 2
    endpoint = f"{conf.scheme}://{conf.host}:{conf.port}"
    console.print(f"mediajobs {__version__} serving on [bold]{endpoint}[/bold] (data in {conf.data_dir})")
    if conf.no_auth:
        console.print("[yellow]--no-auth: unsigned requests are accepted[/yellow]")
    for sid, key in built.credentials.items():
        origin = "generated on first start" if built.generated else "configured"
        console.print(f"credentials ({origin}): SecretId={sid} SecretKey={key}")
    for b in conf.buckets:
        console.print(f"bucket: {b}")
    workers = settings.effective_workers(conf)
    console.print(f"workers: {workers}")
    sys.stdout.flush()
    supervisor = None
    if workers:
        from .jobs.worker import Supervisor

        supervisor = Supervisor(workers, {**os.environ, **settings.to_env(conf)})
        supervisor.start()
    server = uvicorn.Server(
        uvicorn.Config(
            built.api,
            host=conf.host,
            port=conf.port,
            # httptools, with header names spelled as COS spells them (the SDKs need `ETag`).
            http=SpelledHttpToolsProtocol,
            loop="auto",
            lifespan="off",
            access_log=False,
            log_level=conf.log_level,
            # json: uvicorn's own lines go through our handler too, one JSON object each.
            log_config=None if conf.log_format == "json" else LOGGING_CONFIG,
            ssl_certfile=conf.tls_cert or None,
            ssl_keyfile=conf.tls_key or None,
            server_header=False,
            date_header=False,
            timeout_keep_alive=75,
        )
    )
    # uvicorn stops on SIGTERM or SIGINT, then raises the signal again for the handler it found.
    # The default action would end this process before `supervisor.stop()`, and the workers would
    # die by PDEATHSIG (SIGKILL) mid-job instead of stopping cleanly and leaving the `workers`
    # table; so the signal is held until they have stopped, then takes its default action.
    import signal

    held: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: held.append(signum))
    try:
        server.run()
    finally:
        if supervisor is not None:
            supervisor.stop()
    for signum in held[:1]:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
    return 0


def _print_config(markdown: bool) -> int:
    rows = settings.describe()
    if markdown:
        print("| setting | environment variable | default | meaning |")
        print("|---|---|---|---|")
        for name, env, default, text in rows:
            print(f"| `{name}` | `{env}` | `{default}` | {text} |")
        return 0
    for name, env, default, text in rows:
        console.print(f"[bold]{name}[/bold] ({env}, default {default!r}): {text}")
    return 0
