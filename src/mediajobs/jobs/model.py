"""Jobs and queues as values; states with the exact CI strings and the allowed transitions."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..nodes import Nodes


class State(StrEnum):
    SUBMITTED = "Submitted"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILED = "Failed"
    PAUSE = "Pause"
    CANCEL = "Cancel"


TERMINAL = frozenset((State.SUCCESS, State.FAILED, State.CANCEL))
ALL_STATES = tuple(s.value for s in State)

# Every transition the engine makes; each write checks its "from" state in its WHERE clause.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.SUBMITTED: frozenset((State.RUNNING, State.PAUSE, State.CANCEL)),
    State.PAUSE: frozenset((State.SUBMITTED, State.CANCEL)),
    State.RUNNING: frozenset((State.SUCCESS, State.FAILED, State.CANCEL, State.SUBMITTED)),
    State.SUCCESS: frozenset(),
    State.FAILED: frozenset(),
    State.CANCEL: frozenset(),
}

MEDIA = "media"
PIC = "pic"
CATEGORY = {MEDIA: "Transcoding", PIC: "PicProcessing"}


def new_job_id(kind: str) -> str:
    # uuid1 like the service's own ids (note the 11ec-style version nibble); 128 bits of hex.
    return ("j" if kind == MEDIA else "c") + uuid.uuid1().hex


def default_queue_id(bucket: str, category: str) -> str:
    """Stable per bucket and category, so every API node names the same queue."""
    return "p" + hashlib.md5(f"{bucket}/{category}".encode()).hexdigest()


@dataclass(frozen=True)
class Queue:
    queue_id: str
    bucket: str
    category: str
    name: str
    state: str
    notify: dict[str, str]
    max_size: int
    max_concurrent: int
    create_time: float
    update_time: float


@dataclass(frozen=True)
class Job:
    seq: int
    job_id: str
    kind: str
    bucket: str
    region: str
    queue_id: str
    tag: str
    state: str
    job_level: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    input_object: str
    operation: Nodes
    result: Nodes | None
    code: str
    message: str
    progress: int | None
    callback: dict[str, str]
    hold: float | None
    lease_owner: str | None
    lease_until: float | None
    attempts: int
    workflow_id: str | None = None
    inventory_job_id: str | None = None


@dataclass(frozen=True)
class NewJob:
    """What a create request asks for; the store assigns seq and state."""

    job_id: str
    kind: str
    bucket: str
    region: str
    queue_id: str
    tag: str
    job_level: int
    input_object: str
    operation: Nodes
    callback: dict[str, str]
    hold: float | None = None
    created_at: float = 0.0

    def with_time(self) -> NewJob:
        return NewJob(**{**self.__dict__, "created_at": self.created_at or time.time()})


def as_nodes(value: Any) -> Nodes:
    """A node tree back from JSON (lists of [name, value] pairs)."""
    return [(str(k), v if v is None or isinstance(v, str) else as_nodes(v)) for k, v in value]
