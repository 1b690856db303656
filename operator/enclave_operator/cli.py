"""`enclave-operator`: run the operator, check a configuration, or print the CRDs.

enclave-operator run --config config.yaml [--liveness-port 8080] [--metrics-port 9090] [--log-format json]
                     [--webhook-port 9443] [--webhook-address ADDR] [--bind ADDR] [--standalone]
enclave-operator check-config --config config.yaml
enclave-operator gpu-calendar --config config.yaml [--family a100] [--pool slurm|kubernetes] [--days 14]
enclave-operator crds
enclave-operator webhook-config (--url https://host:port | --service namespace/name[:port]) --ca-file ca.crt
                                [--operator-user system:serviceaccount:<namespace>:<name>]

Several `run` processes may serve one cluster (high availability): every process serves the webhooks;
one reconciles, chosen by kopf peering with the start time as priority (docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import secrets
import sys
import time
from pathlib import Path

from enclave_operator import memory
from enclave_operator import settings as settings_mod

log = logging.getLogger("enclave_operator")


def _run(args: argparse.Namespace) -> int:
    memory.limit_arenas()  # before any thread starts (memory.py)
    import kopf
    from prometheus_client import start_http_server

    from enclave_operator import handlers

    config = settings_mod.load(args.config)
    overrides: dict[str, object] = {}
    if args.webhook_port:
        overrides["port"] = args.webhook_port
    if args.webhook_address:
        overrides["listen_address"] = args.webhook_address
    if overrides:
        config = config.model_copy(update={"webhook": config.webhook.model_copy(update=overrides)})
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
            peering_name=None if args.standalone else config.peering.name,
            priority=None if args.standalone else start_priority(),
            liveness_endpoint=liveness,
        )
    )
    return 0


def start_priority() -> int:
    """kopf peering priority: the older the process, the higher (ties broken at random).

    The oldest live process reconciles; a process that (re)starts while another runs waits as a standby
    instead of taking over in the middle of its work. Equal priorities would pause both, hence the
    random tie-breaker below the millisecond.
    """
    return -(time.time_ns() // 1_000_000 * 1000 + secrets.randbelow(1000))


def _webhook_config(args: argparse.Namespace) -> int:
    import yaml

    from enclave_operator import handlers

    name = args.name or settings_mod.WebhookSettings().configuration_name
    if args.url:
        client: dict[str, object] = {"url": args.url}
    else:
        ref, _, port = args.service.partition(":")
        namespace, _, service = ref.partition("/")
        if not namespace or not service:
            raise settings_mod.ConfigError("--service must be namespace/name[:port]")
        client = {"service": {"namespace": namespace, "name": service, "port": int(port or 443)}}
    client["caBundle"] = base64.b64encode(Path(args.ca_file).read_bytes()).decode()
    configurations = handlers.webhook_configurations(name, client, operator_user=args.operator_user)
    sys.stdout.write(yaml.safe_dump_all(configurations, sort_keys=False))
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
    run.add_argument("--standalone", action="store_true", help="no peering (a single process)")
    run.add_argument("--webhook-port", type=int, default=0, help="webhook port (default: webhook.port)")
    run.add_argument("--webhook-address", default="", help="webhook listen address (default: webhook.listenAddress)")
    run.add_argument("--verbose", action="store_true")
    run.add_argument("--debug", action="store_true")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", type=Path)
    cal = sub.add_parser("gpu-calendar", help="per GPU family and pool: booked and free GPUs over time, and who")
    cal.add_argument("--config", type=Path)
    cal.add_argument("--family", help="only this family")
    cal.add_argument("--pool", choices=("slurm", "kubernetes"), help="only this pool")
    cal.add_argument("--days", type=float, default=14.0, help="how far ahead (default 14)")
    sub.add_parser("crds", help="print the CRDs generated from the typed API")
    hook = sub.add_parser("webhook-config", help="print the webhook configurations the deployment installs")
    where = hook.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="https://host:port the API server reaches (every process behind it)")
    where.add_argument("--service", help="namespace/name[:port] of the Service in front of the processes")
    hook.add_argument("--ca-file", required=True, type=Path, help="CA of the serving certificate (caBundle)")
    hook.add_argument("--name", help="configuration name (default: webhooks.enclave.io)")
    hook.add_argument("--operator-user", default="", metavar="USERNAME",
                      help="the operator's own username (system:serviceaccount:<namespace>:<name>): its requests "
                           "skip the webhooks")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "webhook-config":
            return _webhook_config(args)
        if args.command == "check-config":
            settings_mod.load(args.config)
            print("configuration is valid")
            return 0
        if args.command == "gpu-calendar":
            from enclave_operator import gpu_report

            config = settings_mod.load(args.config, check_secrets=False)
            if args.family and args.family not in gpu_report.families(config):
                known = ", ".join(gpu_report.families(config)) or "none"
                print(f"enclave-operator: --family {args.family} is not configured (families: {known})",
                      file=sys.stderr)  # fmt: skip
                return 2
            sys.stdout.write(asyncio.run(gpu_report.calendar(config, args.days, args.family, args.pool)))
            return 0
        from enclave_operator.api import crdgen

        sys.stdout.write("---\n".join(crdgen.rendered_files().values()))
        return 0
    except settings_mod.ConfigError as error:
        print(f"enclave-operator: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
