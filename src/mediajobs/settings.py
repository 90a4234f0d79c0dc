"""Settings: one frozen dataclass, filled from defaults < config file < MEDIAJOBS_* env < flags.

Every field carries its description in `metadata["help"]`; the CLI and the README's
configuration table are built from it, so a setting is documented where it is defined.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

DEFAULT_PORT = 8790


def _f(default: Any, help: str, *, env: bool = True) -> Any:
    return field(default=default, metadata={"help": help, "env": env})


@dataclass(frozen=True)
class Settings:
    host: str = _f("127.0.0.1", "Address to listen on.")
    port: int = _f(DEFAULT_PORT, "TCP port to listen on.")
    data_dir: Path = _f(Path("./mediajobs-data"), "Directory holding the database and object bytes.")
    database_url: str = _f(
        "", "SQLAlchemy URL of the metadata database; empty means SQLite at <data-dir>/mediajobs.db."
    )
    storage: str = _f(
        "",
        "Where object bytes and job outputs live: empty for files under <data-dir>/blobs, or "
        "s3://bucket/optional/prefix for an S3-compatible store (the data dir then holds only scratch files).",
    )
    s3_endpoint: str = _f(
        "", "Endpoint URL of the S3-compatible service, e.g. http://127.0.0.1:8333; empty: AWS S3."
    )
    s3_region: str = _f(
        "",
        "Region the S3 requests are signed for; empty: boto3's chain (AWS_REGION, ~/.aws), else us-east-1.",
    )
    s3_access_key: str = _f(
        "", "S3 access key id; empty: boto3's usual chain (AWS_ACCESS_KEY_ID, ~/.aws, instance role)."
    )
    s3_secret_key: str = _f("", "S3 secret access key belonging to s3_access_key.")
    region: str = _f("ap-guangzhou", "Region reported for buckets created without one.")
    secret_id: str = _f("", "SecretId accepted by the server (with secret_key).")
    secret_key: str = _f("", "SecretKey belonging to secret_id.")
    credentials_file: str = _f(
        "", "File with one 'SecretId SecretKey' pair per line ('#' starts a comment); all pairs are accepted."
    )
    no_auth: bool = _f(False, "Accept unsigned requests. For local experiments only.")
    buckets: tuple[str, ...] = _f((), "Buckets that exist from the first start (comma-separated in env).")
    default_bucket: str = _f(
        "", "Bucket used when the Host header names none and the path is not path-style."
    )
    tls_cert: str = _f("", "PEM certificate file; with tls_key, serve https.")
    tls_key: str = _f("", "PEM private key file for tls_cert.")
    max_object_size: int = _f(5 * 1024**3, "Largest body of a single PUT Object or Upload Part, in bytes.")
    max_xml_size: int = _f(1024 * 1024, "Largest XML request body, in bytes.")
    inline_max: int = _f(
        64 * 1024, "Objects up to this size are kept in the database row instead of a file (0: never)."
    )
    fsync: bool = _f(True, "fsync object bytes and the database before acknowledging a write.")
    sign_skew: int = _f(900, "Seconds a signature's start time may lie in the future.")
    log_level: str = _f("info", "Log level: debug, info, warning, error.")
    log_format: str = _f(
        "text",
        "Log lines as text, or json: one object per line with time, level, logger, message and "
        "request_id, job_id, worker when known (docs/operations.md).",
    )
    workers: int = _f(
        -1,
        "Worker processes `serve` runs beside the API; -1: one per CPU core but one (at least 1); 0: none.",
    )
    lease_seconds: float = _f(
        30.0, "A running job's lease: a job whose worker stops renewing it runs again after this long."
    )
    job_timeout: float = _f(
        3600.0, "Longest run time of any job, in seconds (each Tag may set a lower limit)."
    )
    time_offset: str = _f("+0800", "UTC offset of the times in job and queue responses, as +HHMM.")
    test_controls: bool = _f(
        False,
        "Honour the x-mediajobs-hold request header (hold a new job in Running for N seconds), for tests.",
    )
    callback_timeout: float = _f(5.0, "Seconds to wait for a callback receiver before retrying later.")
    hardware_encoder: str = _f(
        "off",
        "Hardware video encoding for H.264/H.265/AV1: off, auto, nvenc, vaapi or qsv; used only when "
        "a trial encode works on this machine (checked when a worker starts).",
    )

    image_max_bytes: int = _f(
        32 * 1024 * 1024, "Largest image (bytes) that imageMogr2, Pic-Operations and PicProcess will read."
    )
    image_max_pixels: int = _f(
        250_000_000, "Largest image (pixels of one frame) that is decoded; checked on the header first."
    )
    image_max_side: int = _f(30000, "Longest side (pixels) of an image that is decoded.")
    image_max_frames: int = _f(300, "Most frames of an animated GIF/WebP that are processed.")
    image_max_output_side: int = _f(9999, "Longest side (pixels) of a processed image.")
    image_max_output_bytes: int = _f(32 * 1024 * 1024, "Largest processed image, in bytes.")
    image_timeout: float = _f(30.0, "Seconds one image operation may run before it is stopped.")
    image_workers: int = _f(
        -1,
        "Processes that run image requests of an API node (started on the first one); -1: one per "
        "CPU core; 0: in the API process's threads.",
    )

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "mediajobs.db"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert and self.tls_key else "http"


def describe() -> list[tuple[str, str, Any, str]]:
    """(name, env var, default, help) for each setting, in declaration order."""
    return [
        (f.name, "MEDIAJOBS_" + f.name.upper(), f.default, f.metadata["help"])
        for f in dataclasses.fields(Settings)
    ]


def _coerce(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
        if kind is Path:
            return Path(value)
        if kind == tuple[str, ...]:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(s.strip() for s in items if str(s).strip())
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name}: cannot use {value!r}") from exc


def load(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Build Settings from a config file, then MEDIAJOBS_* variables, then `overrides` (the flags)."""
    env = os.environ if env is None else env
    hints = get_type_hints(Settings)
    values: dict[str, Any] = {}
    path = config_file or env.get("MEDIAJOBS_CONFIG")
    if path:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        section = data.get("mediajobs", data)
        for key, value in section.items():
            name = key.replace("-", "_")
            if name not in hints:
                raise ValueError(f"config file {path}: unknown setting {key!r}")
            values[name] = _coerce(name, hints[name], value)
    for f in dataclasses.fields(Settings):
        var = "MEDIAJOBS_" + f.name.upper()
        if var in env:
            values[f.name] = _coerce(f.name, hints[f.name], env[var])
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, hints[name], value)
    conf = Settings(**values)
    if conf.storage and not (conf.storage.startswith("s3://") and conf.storage[5:].strip("/")):
        raise ValueError("setting storage: use s3://bucket or s3://bucket/prefix (empty: local files)")
    if bool(conf.s3_access_key) != bool(conf.s3_secret_key):
        raise ValueError("s3_access_key and s3_secret_key must be given together")
    if conf.hardware_encoder not in ("off", "auto", "nvenc", "vaapi", "qsv"):
        raise ValueError("setting hardware_encoder: use off, auto, nvenc, vaapi or qsv")
    if conf.log_format not in ("text", "json"):
        raise ValueError("setting log_format: use text or json")
    return conf


def effective_workers(s: Settings) -> int:
    # One core stays with the API process, which parses, signs and streams every request.
    return max(1, (os.cpu_count() or 1) - 1) if s.workers < 0 else s.workers


def to_env(s: Settings) -> dict[str, str]:
    """MEDIAJOBS_* variables that rebuild `s` in a child process."""
    out = {}
    for f in dataclasses.fields(Settings):
        value = getattr(s, f.name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = ",".join(value)
        else:
            text = str(value)
        out["MEDIAJOBS_" + f.name.upper()] = text
    return out
