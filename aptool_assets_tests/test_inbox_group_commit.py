"""The PostgreSQL inbox's group commit (PgBatchWriter) under the commit orders a server can produce.

Two batches in flight may commit in either order, which a real server does only now and then; here the
insert is an in-memory stand-in whose commits the test releases newest first, the adversarial order, so
a repeat that could overtake its original always would. The real-PostgreSQL behaviour is in test_inbox.
"""

from __future__ import annotations

import asyncio

from aptool_assets.storage.inbox.batch_writer import PgBatchWriter


class HeldCommits:
    """An insert whose statements wait until released, keeping what each one inserted (ON CONFLICT DO
    NOTHING: the ids not stored yet)."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.statements: list[list[str]] = []
        self._gates: list[asyncio.Event] = []

    async def insert(self, rows: list[tuple]) -> set[str]:
        ids = [row[0] for row in rows]
        self.statements.append(ids)
        gate = asyncio.Event()
        self._gates.append(gate)
        await gate.wait()
        new = {i for i in ids if i not in self.stored}
        self.stored.extend(i for i in ids if i in new)
        return new

    async def release_newest_first(self, answers: list[asyncio.Future]) -> None:
        while not all(a.done() for a in answers):
            for _ in range(100):  # let the writer answer, then form and start its next batches
                await asyncio.sleep(0)
            waiting = [g for g in self._gates if not g.is_set()]
            if not waiting:
                assert all(a.done() for a in answers), "answers are outstanding but no statement is waiting"
                return
            waiting[-1].set()


def run_calls(event_ids: list[str], *, max_batch: int = 256, max_inflight: int = 2):
    async def scenario():
        commits = HeldCommits()
        writer = PgBatchWriter(commits.insert, max_batch=max_batch, max_inflight=max_inflight)
        answers = [writer.submit((event_id, "attendance.updated")) for event_id in event_ids]
        await commits.release_newest_first(answers)
        await writer.drain()
        return [a.result() for a in answers], commits

    return asyncio.run(scenario())


def test_a_repeat_never_overtakes_its_original_in_flight():
    # [a] and [b] go in flight at once; when [b] commits, the queued repeat of a must not be sent in a
    # batch that could commit before [a]'s: it waits, and [c] goes ahead without it.
    results, commits = run_calls(["a", "b", "a", "c"])
    assert results == ["accepted", "accepted", "duplicate", "accepted"]
    assert sorted(commits.stored) == ["a", "b", "c"]
    assert commits.statements[:3] == [["a"], ["b"], ["c"]]
    assert commits.statements[3] == ["a"]  # the repeat, sent once its original had committed


def test_under_load_each_first_arrival_is_accepted_and_batches_stay_bounded():
    ids = [f"e{i:03d}" for i in range(300)]
    calls = ids + ids[::7] + ids[:5]
    results, commits = run_calls(calls, max_batch=64)
    assert results[: len(ids)] == ["accepted"] * len(ids)
    assert results[len(ids) :] == ["duplicate"] * (len(calls) - len(ids))
    assert sorted(commits.stored) == ids
    assert max(len(s) for s in commits.statements) <= 64
    # group commit still groups: far fewer statements than calls
    assert len(commits.statements) < len(calls) / 4


def test_repeats_within_one_batch_are_inserted_once():
    async def scenario():
        commits = HeldCommits()
        writer = PgBatchWriter(commits.insert, max_batch=256, max_inflight=1)
        first = writer.submit(("x", "t"))  # goes alone; the rest queue behind it
        rest = [writer.submit((i, "t")) for i in ["y", "z", "y", "y"]]
        await commits.release_newest_first([first, *rest])
        return [first.result(), *(r.result() for r in rest)], commits

    results, commits = asyncio.run(scenario())
    assert results == ["accepted", "accepted", "accepted", "duplicate", "duplicate"]
    assert commits.statements == [["x"], ["y", "z"]]
