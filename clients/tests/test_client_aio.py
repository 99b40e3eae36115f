"""What only the asyncio client has: event-loop behaviour (the shared API is in
test_client_api.py, which runs against both clients)."""

from __future__ import annotations

import asyncio
import time

import pytest

from recsys_client import AsyncRecsysClient, Backoff, NotFound, Unavailable


def test_async_with_and_concurrent_calls(fake):
    async def main():
        async with AsyncRecsysClient(fake.address, token="t") as client:
            users = [f"u{n}" for n in range(20)]
            results = await asyncio.gather(*(client.recommend(u, k=2) for u in users))
            assert [r.user_id for r in results] == users
            with pytest.raises(NotFound):
                await client.similar_items("missing")
            return await client.health()

    assert asyncio.run(main()) == "SERVING"
    assert len(fake.servicer.calls_of("Recommend")) == 20
    assert all(s.metadata["authorization"] == "Bearer t" for s in fake.recorder.seen)


def test_backoff_does_not_block_the_event_loop(fake):
    backoff = Backoff(initial=0.3, multiplier=1.0, maximum=0.3, jitter=0.0)

    async def main():
        async with AsyncRecsysClient(fake.address, retries=1, backoff=backoff) as client:
            finished: list[str] = []

            async def call(user: str) -> None:
                await client.recommend(user, k=1)
                finished.append(user)

            start = time.monotonic()
            await asyncio.gather(call("flaky:1:slow"), call("fast"))
            return finished, time.monotonic() - start

    finished, elapsed = asyncio.run(main())
    assert finished == ["fast", "flaky:1:slow"]
    assert 0.3 <= elapsed < 1.5


def test_client_made_outside_the_loop_opens_its_channel_inside_it(fake):
    client = AsyncRecsysClient(fake.address)

    async def main():
        try:
            return (await client.recommend("u1", k=1)).item_ids
        finally:
            await client.close()
            await client.close()  # closing twice is harmless

    assert asyncio.run(main()) == ["i1"]


def test_cancelling_a_call_during_backoff(fake):
    backoff = Backoff(initial=5.0, multiplier=1.0, maximum=5.0, jitter=0.0)

    async def main():
        async with AsyncRecsysClient(fake.address, timeout=None, backoff=backoff) as client:
            task = asyncio.create_task(client.recommend("flaky:5:h"))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 2.0
    assert len(fake.servicer.calls_of("Recommend")) == 1


def test_unreachable_server(dead_address):
    async def main():
        async with AsyncRecsysClient(dead_address, retries=1, backoff=(0.01, 2.0, 0.05)) as c:
            await c.list_models()

    with pytest.raises(Unavailable):
        asyncio.run(main())
