"""The hub's web application: the access layer (researchers, stewards, the public register) with the
federation's routes and the hub's routing loop beside it.

One uvicorn worker: the long polls and the answers they wait for meet in this process's event
loop (``hub.routes.Wakeups``). Everything durable is in the stores, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from access.app import create_app
from hdp.settings import SettingsError, get_settings
from hub.coordinator import Hub
from hub.environment import SecureEnvironment
from hub.queries import FederatedQueries
from hub.routes import catalogue_router, federation_router
from hub.wakeups import Wakeups

log = logging.getLogger(__name__)
#: Seconds between the hub's passes over the governance store (applications and permits to
#: route, releases to assemble). A decision a node sends is routed at once; this is the upper
#: bound for what governance changes by other paths (a researcher's submit, an expiry).
ROUTE_EVERY_S = 0.5


def create_hub_app() -> FastAPI:
    settings = get_settings()
    if settings.federation_role != "hub":
        raise SettingsError("the hub runs with HDP_FEDERATION_ROLE=hub")
    app = create_app()
    hub = Hub(settings)
    wakeups = Wakeups()
    hub.wakeup = wakeups.notify
    environment = SecureEnvironment(hub)
    queries = FederatedQueries(hub, app.state.service, wakeups)
    app.include_router(federation_router(hub, wakeups, queries))
    app.include_router(catalogue_router(hub))
    app.state.hub = hub
    app.state.prom_federation = hub.prom_key_figures  # the public federation key-figures page

    async def routing_loop() -> None:
        wakeups.loop = asyncio.get_running_loop()
        while True:
            try:
                await run_in_threadpool(hub.route)
                await run_in_threadpool(environment.assemble_ready)
                await run_in_threadpool(environment.follow_withdrawals)
            except Exception:  # keep routing; the next pass retries what failed
                log.exception("hub routing pass failed")
            await asyncio.sleep(ROUTE_EVERY_S)

    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(routing_loop()))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.router.on_startup.append(start)
    app.router.on_shutdown.insert(0, stop)
    return app
