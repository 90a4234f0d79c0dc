"""JobService: the API's only way into the job store (submit, describe, list, cancel, queues)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from .. import errors
from . import tokens
from .model import CATEGORY, TERMINAL, Job, NewJob, Queue, State, default_queue_id
from .store import JobStore, ListFilter
from .wake import CANCEL, WORK, Waker


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_token: str


class JobService:
    def __init__(self, store: JobStore, waker: Waker | None) -> None:
        self.store = store
        self.waker = waker
        self._token_key: bytes | None = None

    @property
    def token_key(self) -> bytes:
        if self._token_key is None:
            self._token_key = self.store.kv_get_or_set("next_token_key", secrets.token_hex(32)).encode()
        return self._token_key

    def _wake(self, kind: str = WORK) -> None:
        if self.waker is not None:
            self.waker.notify(kind)

    # ---- queues ------------------------------------------------------------------------

    def queue_for(self, bucket: str, kind: str, queue_id: str) -> Queue:
        """The queue a new job goes to: the named one (of the right category and bucket) or the default."""
        self.store.ensure_queues(bucket)
        category = CATEGORY[kind]
        qid = queue_id or default_queue_id(bucket, category)
        q = self.store.get_queue(qid)
        if q is None or q.bucket != bucket:
            raise errors.InvalidArgument(f"QueueId {queue_id} does not exist.")
        if q.category != category:
            raise errors.InvalidArgument(
                f"QueueId {queue_id} is a {q.category} queue; {'picture' if kind == 'pic' else 'media'} "
                f"jobs run in {category} queues."
            )
        return q

    def queues(self, bucket: str, categories: Sequence[str]) -> list[Queue]:
        self.store.ensure_queues(bucket)
        return self.store.list_queues(bucket, categories)

    def update_queue(
        self,
        bucket: str,
        category: str,
        queue_id: str,
        name: str | None,
        state: str,
        notify: dict[str, str] | None,
    ) -> Queue:
        self.store.ensure_queues(bucket)
        q = self.store.get_queue(queue_id)
        if q is None or q.bucket != bucket or q.category != category:
            raise errors.NoSuchResource(f"Queue {queue_id} does not exist.")
        updated = self.store.update_queue(queue_id, name=name or q.name, state=state, notify=notify)
        assert updated is not None
        if state == "Active" and q.state != "Active":
            self._wake()
        return updated

    # ---- jobs --------------------------------------------------------------------------

    def submit(self, new: Sequence[NewJob]) -> list[Job]:
        channel = self.waker.channel if self.waker is not None else None
        created = self.store.create(new, notify=channel)  # on PostgreSQL: wakes them, committed
        if channel is None:
            self._wake()
        return created

    def describe(self, bucket: str, kind: str, ids: Sequence[str]) -> tuple[list[Job], list[str]]:
        found = self.store.get_many(bucket, kind, ids)
        return [found[i] for i in ids if i in found], [i for i in ids if i not in found]

    async def describe_on_loop(
        self, bucket: str, kind: str, ids: Sequence[str]
    ) -> tuple[list[Job], list[str]]:
        """describe, awaited on the event loop (when the store has `loop_reads`)."""
        found = await self.store.get_many_on_loop(bucket, kind, ids)
        return [found[i] for i in ids if i in found], [i for i in ids if i not in found]

    def list_page(self, f: ListFilter, next_token: str, size: int) -> Page:
        scope = tokens.scope_digest(
            f.bucket, f.kind, f.tag, f.queue_id, sorted(f.states), f.start, f.end, f.workflow_id,
            f.inventory_job_id, f.input_object, f.ascending,
        )  # fmt: skip
        after = None
        if next_token:
            try:
                after = tokens.decode(self.token_key, scope, next_token)
            except tokens.BadToken as exc:
                raise errors.InvalidArgument(str(exc)) from None
        found = self.store.list_page(f, after, size + 1)
        more = len(found) > size
        found = found[:size]
        token = tokens.encode(self.token_key, scope, found[-1].created_at, found[-1].seq) if more else ""
        return Page(found, token)

    def cancel(self, bucket: str, kind: str, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None or job.bucket != bucket or job.kind != kind:
            raise errors.NoSuchResource(f"Job {job_id} does not exist.")
        if job.state in (State.SUCCESS, State.FAILED):
            raise errors.InvalidRequest(
                f"Job {job_id} has already finished ({job.state}); it cannot be cancelled."
            )
        if job.state in TERMINAL:
            return job
        out = self.store.cancel(job_id)
        assert out is not None
        before, now = out
        if before == State.RUNNING:
            self._wake(CANCEL)  # the worker running it checks on wake-up and stops at once
        if now.state in (State.SUCCESS, State.FAILED):
            raise errors.InvalidRequest(f"Job {job_id} finished ({now.state}) before it could be cancelled.")
        return now
