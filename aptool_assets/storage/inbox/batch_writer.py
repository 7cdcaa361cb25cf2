"""Group commit for the PostgreSQL inbox's receiver inserts: concurrent requests share one
multi-row ``INSERT`` (one round trip, one commit, one WAL flush) and each is answered only once its
batch committed."""

from __future__ import annotations

import asyncio


class PgBatchWriter:
    """Group commit for the receiver's inserts.

    Each request queues its row and waits. Up to ``max_inflight`` batches (2: one preparing or
    on the wire while the other waits for its WAL flush) are written at once,
    each one statement (one round trip, one commit, one WAL flush) for up to ``max_batch`` rows.
    At low load every batch is a single row written immediately -- there is no waiting window;
    under load, rows queue while earlier batches commit, so the batch size follows the load and
    the per-event cost (Python driver work, round trips, WAL flushes) falls as it rises.

    Nothing is acknowledged early: a future is resolved only after its batch committed. The same
    ``event_id`` twice in one batch is inserted once; the later copies answer ``duplicate``. A copy
    that arrives while a batch holding its ``event_id`` is in flight waits for that batch, so the
    first arrival is always the one ``accepted`` (two batches in flight may commit either way round).
    If a batch fails for a reason other than the connection, its rows are retried one by one, so one
    bad row cannot fail its neighbours.
    """

    def __init__(self, insert, max_batch: int, max_inflight: int) -> None:
        self._insert = insert
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: list[tuple[tuple, asyncio.Future]] = []
        self._inflight = 0
        self._inflight_ids: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    def submit(self, params: tuple) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((params, fut))
        self._kick()
        return fut

    def _kick(self) -> None:
        while self._queue and self._inflight < self.max_inflight:
            batch, held = self._next_batch()
            if not batch:  # everything queued repeats an id in flight: its batch's end kicks again
                return
            self._queue = held
            ids = {params[0] for params, _ in batch}
            self._inflight_ids |= ids
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch, ids))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_batch(self) -> tuple[list, list]:
        """Up to ``max_batch`` queued rows in arrival order, leaving queued (in order) the repeats of
        an id that an in-flight batch holds."""
        batch: list = []
        held: list = []
        for position, item in enumerate(self._queue):
            if len(batch) == self.max_batch:
                held.extend(self._queue[position:])
                break
            (held if item[0][0] in self._inflight_ids else batch).append(item)
        return batch, held

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _flush(self, batch: list[tuple[tuple, asyncio.Future]], ids: set[str]) -> None:
        try:
            await self._write(batch)
        finally:
            self._inflight_ids -= ids
            self._inflight -= 1
            self._kick()

    async def _write(self, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        import psycopg

        unique: dict[str, tuple] = {}
        for params, _ in batch:
            unique.setdefault(params[0], params)
        try:
            inserted = await self._insert(list(unique.values()))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            if len(unique) == 1 or isinstance(exc, psycopg.OperationalError):
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            inserted, failed = set(), {}
            for event_id, params in unique.items():
                try:
                    inserted |= await self._insert([params])
                except Exception as one_exc:  # noqa: BLE001 - each caller gets its own error
                    failed[event_id] = one_exc
            for params, fut in batch:
                if params[0] in failed and not fut.done():
                    fut.set_exception(failed[params[0]])
        answered: set[str] = set()
        for params, fut in batch:
            if fut.done():  # the request went away (client disconnect), or failed above
                continue
            event_id = params[0]
            fut.set_result("accepted" if event_id in inserted and event_id not in answered else "duplicate")
            answered.add(event_id)
