"""Assembles and runs the gRPC server: Recommender + health + reflection, interceptors,
metrics endpoint, data store, model polling, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recsys_core.datastore import (
    DataStore,
    StoreConfigError,
    StoreUnavailable,
    open_store,
    parse_store_url,
)
from recsys_core.datastore.feed import StoreFeed
from recsys_server import store_watch
from recsys_server.catalogue import Catalogue
from recsys_server.config import ServerConfig
from recsys_server.config_reload import ConfigReload
from recsys_server.core import RecommenderCore
from recsys_server.follow import Follower
from recsys_server.impressions import ImpressionRecorder
from recsys_server.interceptors import Auth, Observe
from recsys_server.log_import import LogImportError, import_old_log
from recsys_server.metrics import Metrics
from recsys_server.model_versions import ModelVersions
from recsys_server.old_log import LogLockedError
from recsys_server.service import SERVICE_NAME, RecommenderService, add_to_server
from recsys_server.snapshot import Snapshot
from recsys_server.store_watch import STORE_SERVICE

log = logging.getLogger(__name__)

HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAX_MESSAGE = 16 * 1024 * 1024


class StartupError(Exception):
    """The server cannot start (port in use, data store unusable, unreadable TLS files)."""


@dataclass
class Running:
    """A started server, for tests and embedding; `stop` is the shutdown sequence."""

    config: ServerConfig
    """As started; after a configuration reload the live settings are ``core.config``."""
    server: grpc.aio.Server
    port: int
    metrics_port: int
    core: RecommenderCore
    health: health.aio.HealthServicer
    metrics: Metrics
    datastore: DataStore
    observe: Observe
    reloader: ConfigReload
    poller: asyncio.Task | None = None
    store_watch: asyncio.Task | None = None
    follower: Follower | None = None
    follow_task: asyncio.Task | None = None

    @property
    def address(self) -> str:
        return f"{_host(self.config.host)}:{self.port}"

    async def stop(self) -> dict:
        """The shutdown sequence, within ``grace_seconds`` of its start:

        1. health turns NOT_SERVING (client-side balancers and probes move away) and every new
           Recommender call is refused with UNAVAILABLE;
        2. drain: wait until the calls accepted before (1) have finished and no call has
           arrived for ``drain_quiet_seconds``, for at most ``drain_seconds``;
        3. stop: grpc stops accepting and gives what is still open (health watches, calls
           still running) the rest of the grace period; then the impressions still queued
           are stored in what is left of it (those that cannot be are counted as dropped)
           and the data store is closed (what it has queued is committed first).

        grpc cancels (CANCELLED, no handler run) a call that reached its core but not yet Python
        when the server stops, and any call that arrives on an open connection after that, so
        the port stays open while calls still arrive: they get UNAVAILABLE instead. Returns
        the counts also exported as ``recsys_shutdown_calls_total`` and logged.
        """
        t0 = time.perf_counter()
        grace = self.config.grace_seconds
        await self.health.enter_graceful_shutdown()
        self.observe.drain()
        for task in (self.poller, self.store_watch, self.follow_task):
            if task is not None:
                task.cancel()
        if self.follower is not None:
            await asyncio.to_thread(self.follower.feed.close)
        drain_until = t0 + min(self.config.drain_seconds, grace)
        quiet = self.config.drain_quiet_seconds
        while (now := time.perf_counter()) < drain_until:
            if self.observe.active == 0 and now - self.observe.last_arrival >= quiet:
                break
            await asyncio.sleep(0.01)
        drained = time.perf_counter() - t0
        await self.server.stop(max(0.0, grace - drained))
        await asyncio.sleep(0)  # let cancelled handlers count themselves
        recorder = self.core.impressions
        if recorder is not None:  # queued impressions: stored in the grace left, else counted
            left = max(0.0, grace - (time.perf_counter() - t0))
            await asyncio.to_thread(recorder.stop, left)
        await self.datastore.close()
        self.metrics.stop_http()
        counts = dict(self.observe.shutdown_counts, drain_seconds=round(drained, 3))
        # completed / cancelled: in flight at NOT_SERVING; refused: UNAVAILABLE while draining.
        log.info("shutdown counts %s", json.dumps(counts))
        return counts


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _credentials(cfg: ServerConfig) -> grpc.ServerCredentials | None:
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    try:
        key, cert = cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes()
    except OSError as e:
        raise StartupError(f"cannot read TLS files: {e}") from e
    return grpc.ssl_server_credentials([(key, cert)])


async def start(
    cfg: ServerConfig,
    *,
    poll: bool = True,
    config_path: Path | None = None,
    file_config: ServerConfig | None = None,
) -> Running:
    """``config_path``: the configuration file a reload (SIGHUP) reads again; ``file_config``:
    that file as read at start, before command-line flags (default ``cfg``)."""
    if cfg.artifacts is None:
        raise StartupError("no artifacts directory given (--artifacts)")
    metrics = Metrics(cfg.experiments)
    health_servicer = health.aio.HealthServicer()
    for name in ("", SERVICE_NAME, STORE_SERVICE):
        await health_servicer.set(name, NOT_SERVING)

    pending: set[asyncio.Task] = set()

    def on_swap(snap: Snapshot) -> None:  # runs on the event loop
        for name in ("", SERVICE_NAME):
            task = asyncio.ensure_future(health_servicer.set(name, SERVING))
            pending.add(task)
            task.add_done_callback(pending.discard)

    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),  # a port in use must fail, not be shared
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            # Calls not yet taken up wait in grpc's core, where nothing in Python sees them:
            # past max_concurrent_rpcs of them, grpc refuses new ones at once (CANCELLED, its
            # only status for it), so under overload the wait stays bounded (about that many
            # calls' worth) instead of growing. A small cap would also refuse the bursts of
            # ordinary load while a batch holds the interpreter.
            ("grpc.server.max_pending_requests", cfg.max_concurrent_rpcs),
            ("grpc.server.max_pending_requests_hard_limit", 2 * cfg.max_concurrent_rpcs),
        ],
        # Not grpc's maximum_concurrent_rpcs: its limiter stops taking calls off the queue
        # (a growing queue, health included). `Observe` refuses with RESOURCE_EXHAUSTED when
        # more than max_concurrent_rpcs calls are in flight.
    )
    address = f"{_host(cfg.host)}:{cfg.port}"
    creds = _credentials(cfg)
    try:
        port = (
            server.add_secure_port(address, creds)
            if creds is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError as e:
        port, reason = 0, str(e)
    else:
        reason = ""
    if port == 0:
        raise StartupError(
            f"cannot listen on {address}: the port is already in use or the address is not "
            f"local {('(' + reason + ')') if reason else ''}".strip()
        )
    try:
        metrics_port = metrics.serve_http(cfg.host, cfg.metrics_port)
    except OSError as e:
        await server.stop(None)
        raise StartupError(
            f"cannot serve metrics on {_host(cfg.host)}:{cfg.metrics_port}: {e.strerror or e}"
        ) from e
    try:
        datastore = await open_datastore(cfg)
    except StartupError:
        metrics.stop_http()
        await server.stop(None)
        raise
    metrics.store.store = datastore
    await health_servicer.set(STORE_SERVICE, SERVING if datastore.state == "ok" else NOT_SERVING)

    def on_store_change(state: str) -> None:  # runs on the event loop
        task = asyncio.ensure_future(
            health_servicer.set(STORE_SERVICE, SERVING if state == "ok" else NOT_SERVING)
        )
        pending.add(task)
        task.add_done_callback(pending.discard)

    try:
        # Before any call is taken: an unavailable item is never served, not even at start.
        live_catalogue = await asyncio.to_thread(Catalogue.load, datastore)
    except StoreUnavailable as e:
        metrics.stop_http()
        await server.stop(None)
        await datastore.close()
        raise StartupError(f"cannot read the catalogue from the data store: {e}") from e
    versions = ModelVersions(cfg, metrics, on_swap, datastore)
    recorder = (
        ImpressionRecorder(datastore, cfg.impression_queue, metrics)
        if cfg.impression_queue > 0
        else None
    )
    core = RecommenderCore(cfg, versions, datastore, metrics, live_catalogue, recorder)
    observe = Observe(metrics, limit=cfg.max_concurrent_rpcs)
    add_to_server(
        RecommenderService(core),
        server,
        observe,
        Auth(read=cfg.read_token, write=cfg.write_token, admin=cfg.admin_token),
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, HEALTH_NAME, reflection.SERVICE_NAME), server
    )
    await server.start()
    reload = ConfigReload(config_path, file_config or cfg, core, metrics)
    running = Running(
        cfg, server, port, metrics_port, core, health_servicer, metrics, datastore, observe, reload
    )
    if poll:
        running.poller = asyncio.create_task(versions.poll_forever(), name="model-poll")
    running.store_watch = asyncio.create_task(
        store_watch.watch(datastore, on_store_change), name="store-watch"
    )
    if cfg.follow_seconds > 0 and parse_store_url(cfg.store_url).scheme == "postgresql":
        # Replicas may share this store: fold what the others store (docs/replicas.md).
        versions.following = True
        feed = StoreFeed(datastore, listen=True)
        running.follower = Follower(
            datastore, feed, versions, live_catalogue, metrics, poll_seconds=cfg.follow_seconds
        )
        running.follow_task = asyncio.create_task(running.follower.run(), name="follower")
    return running


async def open_datastore(cfg: ServerConfig) -> DataStore:
    """Open (and migrate) the store, and import an old event log into it the first time.
    StartupError naming the store (or the old log) when that fails."""
    try:
        datastore = await asyncio.to_thread(open_store, cfg.store_url)
    except StoreConfigError as e:
        raise StartupError(f"cannot open the data store: {e}") from e
    except StoreUnavailable as e:
        raise StartupError(f"cannot reach the data store: {e}") from e
    try:
        await import_old_log(cfg.import_log_dir, datastore)
    except BaseException as e:
        await datastore.close()
        if isinstance(e, LogLockedError | LogImportError | StoreUnavailable | OSError):
            raise StartupError(f"cannot import the old event log: {e}") from e
        raise
    return datastore


async def serve(
    cfg: ServerConfig,
    announce: Callable[[str], None] = print,
    config_path: Path | None = None,
    file_config: ServerConfig | None = None,
) -> None:
    """Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration file's experiment
    settings (`recsys_server.config_reload`). A SIGHUP during start is kept and applied once
    the server listens (the file may have changed after it was read), never fatal."""
    loop = asyncio.get_running_loop()
    early: list[int] = []
    loop.add_signal_handler(signal.SIGHUP, lambda: early.append(1))
    running = await start(cfg, config_path=config_path, file_config=file_config)
    host = _host(cfg.host)
    announce(
        f"recsys-serve listening on {running.address} "
        f"({'TLS' if cfg.tls_cert else 'plaintext'}); "
        f"metrics http://{host}:{running.metrics_port}/metrics; "
        f"artifacts {cfg.artifacts}; store {running.datastore.url}"
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task] = set()

    def on_hup() -> None:
        task = asyncio.ensure_future(running.reloader.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if early:
        on_hup()
    await stop.wait()
    log.info(
        "shutting down: health NOT_SERVING, drain up to %.1f s, %.1f s grace in all",
        min(cfg.drain_seconds, cfg.grace_seconds),
        cfg.grace_seconds,
    )
    await running.stop()
    log.info("stopped")
