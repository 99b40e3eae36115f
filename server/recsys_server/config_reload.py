"""Configuration hot reload (SIGHUP): the server reads its configuration file again and applies
the experiment settings while it serves. A file that does not validate is refused as a whole
(the log names the field) and the previous configuration keeps serving; other settings changed
in the file need a restart and are not applied. See docs/experiments.md, "Assignment and hot
reload"."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recsys_server import config as config_mod
from recsys_server.config import ConfigError, Experiment, ServerConfig

if TYPE_CHECKING:
    from recsys_server.core import RecommenderCore
    from recsys_server.metrics import Metrics

log = logging.getLogger(__name__)

LIVE = ("experiments", "outcomes", "attribution_hours")
"""The settings a reload applies; every other one is read only at start."""
APPLIED, UNCHANGED, REFUSED = "applied", "unchanged", "refused"
RESULTS = (APPLIED, UNCHANGED, REFUSED)


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str
    """`APPLIED`, `UNCHANGED` or `REFUSED`."""
    message: str
    restart_needed: tuple[str, ...] = ()
    """Settings changed in the file that only a restart applies (not applied)."""
    moved: tuple[str, ...] = ()
    """Experiments whose users' assignments moved, with why (`moved`)."""


def moved(before: tuple[Experiment, ...], after: tuple[Experiment, ...]) -> tuple[str, ...]:
    """Why users' assignments move (`router.assign`), one line per experiment affected: its
    own shares or variants changed, an experiment before it changed its coverage (users move
    in or out of it), or it is new or removed. Empty: nobody moves."""

    def coverage(exps: tuple[Experiment, ...]) -> dict[str, tuple]:
        out, prefix = {}, ()
        for e in exps:
            split = (e.kind, tuple((v.name, v.share) for v in e.variants))
            out[e.name] = (prefix, split)
            prefix += ((e.name, sum(v.share for v in e.variants)),)
        return out

    old, new = coverage(before), coverage(after)
    lines = []
    for name, (prefix, split) in new.items():
        if name not in old:
            lines.append(f"{name}: new")
        elif split != old[name][1]:
            lines.append(f"{name}: its variants or shares changed")
        elif prefix != old[name][0]:
            lines.append(f"{name}: an experiment before it changed its coverage")
    lines += [f"{name}: removed" for name in old if name not in new]
    return tuple(lines)


def restart_needed(before: ServerConfig, after: ServerConfig) -> tuple[str, ...]:
    """The settings other than `LIVE` that differ between two readings of the file."""
    return tuple(
        f.name
        for f in dataclasses.fields(ServerConfig)
        if f.name not in LIVE and getattr(before, f.name) != getattr(after, f.name)
    )


class ConfigReload:
    """Re-reads ``path`` and applies its `LIVE` settings to ``core``. ``file_config``: the
    file as read at start (before command-line flags), what a later reading is compared with
    to tell which start-only settings changed."""

    def __init__(
        self,
        path: Path | None,
        file_config: ServerConfig,
        core: RecommenderCore,
        metrics: Metrics | None = None,
    ) -> None:
        self.path = path
        self.file_config = file_config
        self.core = core
        self.metrics = metrics
        self._lock = asyncio.Lock()  # one reload at a time, in signal order

    async def reload(self) -> Outcome:
        async with self._lock:
            outcome = await self._reload()
        if self.metrics is not None:
            self.metrics.config_reloads.labels(outcome.result).inc()
        return outcome

    async def _reload(self) -> Outcome:
        if self.path is None:
            log.warning("config reload: the server was started without --config; nothing read")
            return Outcome(REFUSED, "no configuration file (started without --config)")
        try:
            new_file = await asyncio.to_thread(config_mod.load, self.path)
            current = self.core.config
            wanted = current.replace(**{name: getattr(new_file, name) for name in LIVE})
        except ConfigError as e:
            log.error("config reload refused, the previous configuration keeps serving: %s", e)
            return Outcome(REFUSED, str(e))
        restart = restart_needed(self.file_config, new_file)
        if restart:
            log.warning(
                "config reload: %s changed in %s; applied only by a restart (not applied)",
                ", ".join(restart),
                self.path,
            )
        if all(getattr(wanted, n) == getattr(current, n) for n in LIVE):
            log.info("config reload: experiment settings unchanged")
            return Outcome(UNCHANGED, "experiment settings unchanged", restart)
        await self.core.versions.reconfigure(wanted)
        self.core.config = wanted  # no await since the swap: requests see both together
        if self.metrics is not None:
            self.metrics.init_variants(wanted.experiments)
            self.metrics.init_experiments(wanted.experiments)
        changed = [n for n in LIVE if getattr(wanted, n) != getattr(current, n)]
        names = ", ".join(f"{e.name} ({e.kind})" for e in wanted.experiments) or "none"
        log.info("config reload applied: %s changed; experiments: %s", ", ".join(changed), names)
        shifted = moved(current.experiments, wanted.experiments)
        if shifted:
            log.warning("config reload: users' assignments move in %s", "; ".join(shifted))
        return Outcome(APPLIED, f"applied: {', '.join(changed)}", restart, shifted)
