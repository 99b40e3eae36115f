"""``recsys-serve``: the recommendation gRPC server.

    recsys-serve --artifacts DIR [--host 127.0.0.1] [--port 50051] [--metrics-port 9100]
                 [--config FILE] [--store URL] [--tls-cert F --tls-key F]

Settings: defaults, then the TOML ``--config`` file, then RECSYS_WRITE_TOKEN /
RECSYS_ADMIN_TOKEN / RECSYS_READ_TOKEN and RECSYS_STORE_URL, then the flags. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# One thread per numeric call: a request scores one user, where thread fan-out costs more
# latency than it saves. Set before numpy / recsys_core are imported; the environment wins.
THREAD_ENV = ("RECSYS_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsys-serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", type=Path, help="artifacts directory (recsys-train --out)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gRPC port (default 50051; 0: any free port)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (default 9100; 0: any)")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument(
        "--store",
        metavar="URL",
        help="data store: sqlite:///PATH or postgresql://… "
        "(default: $RECSYS_STORE_URL, else store in --config, else "
        "sqlite:///<artifacts>/../events.db)",
    )
    p.add_argument(
        "--import-log",
        type=Path,
        metavar="DIR",
        help="event log directory of an older recsys-serve, imported into the store once "
        "(default <artifacts>/../events, when it exists)",
    )
    p.add_argument("--log-dir", type=Path, help=argparse.SUPPRESS)  # replaced: see main
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain (with --tls-key)")
    p.add_argument("--tls-key", type=Path, help="PEM private key (with --tls-cert)")
    p.add_argument("--default-model", help="model for requests that name none")
    p.add_argument("--poll-seconds", type=float, help="artifact poll interval")
    p.add_argument(
        "--follow-seconds",
        type=float,
        help="PostgreSQL store: poll interval of the follower that folds other replicas' "
        "events, besides NOTIFY (default 1; 0: off)",
    )
    p.add_argument(
        "--precompute-users",
        type=int,
        help="most active known users whose hybrid ranking is computed at load (default 20000)",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.log_dir is not None:
        parser.error(
            "--log-dir was replaced by --store URL (the data store) and --import-log DIR "
            f"(imports the old log once): try --import-log {args.log_dir}"
        )
    for var in THREAD_ENV:
        os.environ.setdefault(var, "1")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import asyncio

    from recsys_server import config as config_mod
    from recsys_server.server import StartupError, serve

    try:
        file_cfg = cfg = config_mod.load(args.config)
        flags = {
            "artifacts": args.artifacts,
            "host": args.host,
            "port": args.port,
            "metrics_port": args.metrics_port,
            "store": args.store,
            "import_log": args.import_log,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "default_model": args.default_model,
            "poll_seconds": args.poll_seconds,
            "follow_seconds": args.follow_seconds,
            "precompute_users": args.precompute_users,
        }
        cfg = cfg.replace(**{k: v for k, v in flags.items() if v is not None})
        if cfg.artifacts is None:
            raise config_mod.ConfigError("--artifacts (or artifacts in --config) is required")
    except config_mod.ConfigError as e:
        print(f"recsys-serve: error: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            serve(cfg, lambda line: print(line, flush=True), args.config, file_config=file_cfg)
        )
    except StartupError as e:
        print(f"recsys-serve: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
