"""`enclave-operator`: run the operator, check a configuration, or print the CRDs.

enclave-operator run --config config.yaml [--liveness-port 8080] [--metrics-port 9090] [--log-format json]
enclave-operator check-config --config config.yaml
enclave-operator crds
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from enclave_operator import settings as settings_mod

log = logging.getLogger("enclave_operator")


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from enclave_operator import handlers

    config = settings_mod.load(args.config)
    kopf.configure(
        debug=args.debug,
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    for noisy in ("httpx2", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # one line per request drowns what matters
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.bind)
        log.info("metrics on http://%s:%d/metrics", args.bind, args.metrics_port)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, config)
    liveness = f"http://{args.bind}:{args.liveness_port}/healthz" if args.liveness_port else None
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=True,
            standalone=args.standalone,
            liveness_endpoint=liveness,
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="enclave-operator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against the cluster in $KUBECONFIG or in-cluster")
    run.add_argument("--config", type=Path, help=f"configuration file (default ${settings_mod.CONFIG_ENV})")
    run.add_argument("--bind", default="0.0.0.0", help="address of the liveness and metrics endpoints")
    run.add_argument("--liveness-port", type=int, default=8080, help="liveness endpoint port (0 disables)")
    run.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0 disables)")
    run.add_argument("--log-format", choices=("plain", "json"), default="plain")
    run.add_argument("--standalone", action="store_true", help="no peering (a single replica)")
    run.add_argument("--verbose", action="store_true")
    run.add_argument("--debug", action="store_true")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", type=Path)
    sub.add_parser("crds", help="print the CRDs generated from the typed API")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "check-config":
            settings_mod.load(args.config)
            print("configuration is valid")
            return 0
        from enclave_operator.api import crdgen

        sys.stdout.write("---\n".join(crdgen.rendered_files().values()))
        return 0
    except settings_mod.ConfigError as error:
        print(f"enclave-operator: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
