"""A crowd for the web remote: pages on WebSockets and a stream of requests, used by the
flood test (tests/test_remote.py) and its benchmark (bench/remote.py), so both load the
daemon the same way. Bounded in count and time; loopback only."""

from __future__ import annotations

import asyncio
import time


async def flood(port: int, pages: int, rate: float, seconds: float,
                settle_s: float = 0.0) -> dict:
    """`pages` WebSocket clients timing every status update, plus `rate` requests a second
    for `seconds` (GET /api/status, one malformed POST /api/cmd in ten). `settle_s`: time
    for the pages to open before the requests start (0: they open during the flood).

    Returns "arrivals" (per page, the monotonic times of its status updates), "updates"
    (their counts), "intervals" (ms between a page's updates, all pages), "latencies" (ms
    of each answered GET, sorted) and "errors" (connections and requests that failed)."""
    import aiohttp
    base = f"http://127.0.0.1:{port}"
    arrivals: list[list[float]] = [[] for _ in range(pages)]
    latencies: list[float] = []
    errors = 0
    stop = asyncio.Event()

    async def page(i: int, s) -> None:
        nonlocal errors
        try:
            async with s.ws_connect(base + "/api/ws") as ws:
                while not stop.is_set():
                    try:
                        m = await ws.receive(timeout=0.5)
                    except TimeoutError:
                        continue
                    if m.type != aiohttp.WSMsgType.TEXT:
                        break
                    if m.data.startswith('{"type":"status"'):
                        arrivals[i].append(time.monotonic())
        except aiohttp.ClientError:
            errors += 1

    async def requests(s) -> None:
        nonlocal errors
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            t = time.monotonic()
            try:
                if n % 10 == 9:
                    async with s.post(base + "/api/cmd", data=b"{bad") as r:
                        await r.read()
                else:
                    async with s.get(base + "/api/status") as r:
                        await r.read()
                        latencies.append((time.monotonic() - t) * 1e3)
            except aiohttp.ClientError:
                errors += 1
            n += 1
            await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        tasks = [asyncio.ensure_future(page(i, s)) for i in range(pages)]
        await asyncio.sleep(settle_s)
        await requests(s)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    intervals = [(b - a) * 1e3 for arr in arrivals for a, b in zip(arr, arr[1:], strict=False)]
    return {"arrivals": arrivals, "updates": [len(a) for a in arrivals],
            "intervals": intervals, "latencies": sorted(latencies), "errors": errors}
