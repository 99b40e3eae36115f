"""What only the asyncio client has: event-loop behaviour (the shared API is in
test_client_api.py, which runs against both clients)."""

from __future__ import annotations

import asyncio
import contextlib
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


def test_backoff_does_not_block_the_event_loop(fake, retry_decisions):
    # A long backoff: the other call must end while it runs, not after it.
    backoff = Backoff(initial=30.0, multiplier=1.0, maximum=30.0, jitter=0.0)

    async def main():
        async with AsyncRecsysClient(
            fake.address, timeout=None, retries=1, backoff=backoff
        ) as client:
            slow = asyncio.create_task(client.recommend("flaky:1:slow", k=1))
            while not retry_decisions:  # its first attempt failed: it is in its backoff now
                await asyncio.sleep(0.005)
            fast = await client.recommend("fast", k=1)
            in_backoff = not slow.done()
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow
            return fast.user_id, in_backoff

    assert asyncio.run(main()) == ("fast", True)
    assert retry_decisions == [30.0]
    # The slow call's retry was still waiting when the other call had been answered.
    seen = [c.request.user_id for c in fake.servicer.calls_of("Recommend")]
    assert seen == ["flaky:1:slow", "fast"]


def test_client_made_outside_the_loop_opens_its_channel_inside_it(fake):
    client = AsyncRecsysClient(fake.address)

    async def main():
        try:
            return (await client.recommend("u1", k=1)).item_ids
        finally:
            await client.close()
            await client.close()  # closing twice is harmless

    assert asyncio.run(main()) == ["i1"]


def test_cancelling_a_call_during_backoff(fake, retry_decisions):
    backoff = Backoff(initial=60.0, multiplier=1.0, maximum=60.0, jitter=0.0)

    async def main():
        async with AsyncRecsysClient(fake.address, timeout=None, backoff=backoff) as client:
            task = asyncio.create_task(client.recommend("flaky:5:h"))
            while not retry_decisions:  # its first attempt failed: it is in its backoff now
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 30  # the 60 s backoff did not run to its end
    assert retry_decisions == [60.0]
    assert len(fake.servicer.calls_of("Recommend")) == 1


def test_unreachable_server(dead_address):
    async def main():
        async with AsyncRecsysClient(dead_address, retries=1, backoff=(0.01, 2.0, 0.05)) as c:
            await c.list_models()

    with pytest.raises(Unavailable):
        asyncio.run(main())
