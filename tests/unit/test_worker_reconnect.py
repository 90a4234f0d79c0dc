"""A worker's answer to a database connection that the server dropped: its pool pings only
connections that sat idle, so the first statement on a dropped one fails. The end of a job is
tried once more (it is a conditional write, safe to repeat), and the claim loop goes round again
at once instead of after its one-second pause."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from mediajobs.jobs.model import State
from mediajobs.jobs.store import Finished
from mediajobs.jobs.worker import Worker


def dropped(invalidated: bool = True) -> DBAPIError:
    return DBAPIError(
        "UPDATE jobs ...", {}, Exception("server closed the connection"), connection_invalidated=invalidated
    )


class Store:
    def __init__(self, failures: list[DBAPIError]) -> None:
        self.failures = failures
        self.calls: list[str] = []

    def finish(self, job_id: str, owner: str, state: State, **_: Any) -> Finished:
        self.calls.append(job_id)
        if self.failures:
            raise self.failures.pop(0)
        return Finished(callback_queued=False)

    def worker_beat(self, *_: Any, **__: Any) -> int:
        return 0

    def worker_gone(self, _: str) -> None:
        pass


def worker(store: Store) -> Worker:
    objects: Any = SimpleNamespace(blobs=SimpleNamespace())
    return Worker(store, objects, lease=30.0, job_timeout=60.0, listener=None)  # type: ignore[arg-type]


def test_the_end_of_a_job_is_tried_again_on_a_new_connection() -> None:
    store = Store([dropped()])
    job: Any = SimpleNamespace(job_id="j1")
    assert worker(store)._finish(job, State.SUCCESS, code="Success", message="", result=None) is not None
    assert store.calls == ["j1", "j1"]


def test_other_database_errors_are_not_retried() -> None:
    store = Store([dropped(invalidated=False)])
    job: Any = SimpleNamespace(job_id="j1")
    with pytest.raises(DBAPIError):
        worker(store)._finish(job, State.SUCCESS, code="Success", message="", result=None)
    assert store.calls == ["j1"]


def test_the_claim_loop_goes_round_again_at_once_after_a_dropped_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = worker(Store([]))
    stop = threading.Event()
    steps: list[int] = []
    waits: list[float] = []

    def step(_: threading.Event) -> bool:
        steps.append(len(steps))
        if len(steps) == 1:
            raise dropped()
        stop.set()
        return False

    monkeypatch.setattr(w, "step", step)
    monkeypatch.setattr(stop, "wait", lambda timeout=None: waits.append(timeout) or False)
    w.run_forever(stop)
    assert steps == [0, 1] and waits == []  # no pause before the second try
