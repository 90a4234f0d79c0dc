"""Composition root: the one place that picks concrete stores and wires them together."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from .api.routes import check_bucket_name
from .api.server import Api, Credentials
from .core import build_core
from .jobs.service import JobService
from .settings import Settings
from .storage.service import ObjectService

log = logging.getLogger("mediajobs")


@dataclass(frozen=True)
class Built:
    api: Api
    service: ObjectService
    credentials: dict[str, str]  # pairs to show the operator
    generated: bool


def read_credentials_file(path: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(":", " ").split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'SecretId SecretKey'")
        pairs[parts[0]] = parts[1]
    return pairs


def build(settings: Settings) -> Built:
    core = build_core(settings)
    service = core.objects
    service.blobs.sweep_temporary()
    service.collect_garbage()

    static: dict[str, str] = {}
    if settings.secret_id or settings.secret_key:
        if not (settings.secret_id and settings.secret_key):
            raise ValueError("secret_id and secret_key must be given together")
        static[settings.secret_id] = settings.secret_key
    if settings.credentials_file:
        static.update(read_credentials_file(settings.credentials_file))
    generated = False
    shown = dict(static)
    if not static:
        stored = service.credentials()
        if not stored:
            # First start with no credentials: make a pair and keep it in the database,
            # where every API node on the same database finds it.
            sid = "AKID" + secrets.token_hex(16)
            service.add_credentials(sid, secrets.token_urlsafe(24))
            stored = service.credentials()
            generated = True
        shown = stored
    for name in settings.buckets:
        check_bucket_name(name)
        service.create_bucket(name, settings.region, exist_ok=True)
    if settings.default_bucket:
        check_bucket_name(settings.default_bucket)
    jobs = JobService(core.store, core.waker)
    jobs.token_key  # noqa: B018 - create the shared NextToken key before any worker or node needs it
    api = Api(settings, service, Credentials(service, static), jobs)
    return Built(api, service, shown, generated)
