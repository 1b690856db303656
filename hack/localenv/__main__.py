"""Command line for the local environment.

python hack/localenv up [--controllers] [--only plane|minio]   start what is not running yet
python hack/localenv down                                      stop every process it started
python hack/localenv stop NAME [NAME ...]                      stop services by name (see status), e.g. a node's sshd
python hack/localenv env                                       print `export KUBECONFIG=...`
python hack/localenv status                                    list services, PIDs and logs
python hack/localenv add-user NAME [NAME ...]                  add researchers to FreeIPA, LDAP and MinIO
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as `python hack/localenv`: Python put this directory first on sys.path, where our module
    # minio.py would shadow the minio client library. Import localenv as a package from hack/ instead.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))

from localenv import environment  # noqa: E402
from localenv.runtime import RunDir, ServiceError, pid_alive  # noqa: E402


def _in_project_venv(argv: list[str] | None) -> None:
    """add-user talks to the backends with the project's client libraries: re-run under .venv when the
    plain `python3` lacks them (the rest of localenv is standard library only)."""
    try:
        import minio  # noqa: F401
    except ImportError:
        venv_python = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
        if not venv_python.exists():
            raise ServiceError("the project's virtualenv is missing: run `make venv` first") from None
        os.execv(venv_python, [str(venv_python), str(Path(__file__).resolve().parent), *(argv or sys.argv[1:])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="localenv", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="run directory (default .run or $ENCLAVE_RUN_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build if needed and start services")
    up.add_argument("--controllers", action="store_true", help="also start kube-controller-manager and kube-scheduler")
    up.add_argument("--no-build", action="store_true", help="do not run the Go builds (binaries must exist)")
    up.add_argument("--only", action="append", choices=environment.COMPONENTS, help="start only these components")
    sub.add_parser("down", help="stop every service recorded in the run directory")
    stop = sub.add_parser("stop", help="stop services by name (as `status` lists them)")
    stop.add_argument("names", nargs="+", metavar="NAME")
    sub.add_parser("env", help="print shell exports for the running environment")
    sub.add_parser("status", help="list services")
    add = sub.add_parser("add-user", help="add researchers to every running identity backend and to MinIO")
    add.add_argument("names", nargs="+", metavar="NAME", help="usernames, as in spec.members[].user")
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir)
    try:
        if args.command == "up":
            components = args.only or list(environment.COMPONENTS)
            if not args.no_build:
                environment.build(components)
            environment.up(run, components=components, controllers=args.controllers)
            print(environment.exports(run))
        elif args.command == "down":
            stopped = run.stop_all()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.command == "stop":
            known = run.load()["services"]
            for name in args.names:
                if name not in known:
                    raise ServiceError(f"no service {name!r} in {run.path}; running: {', '.join(known) or 'none'}")
                run.stop(name)
                print(f"stopped: {name}")
        elif args.command == "env":
            print(environment.exports(run))
        elif args.command == "add-user":
            _in_project_venv(argv)
            from localenv.people import PEOPLE_FILE, add_people

            for backend, names in add_people(run, args.names).items():
                print(f"added to {backend}: {', '.join(names)}")
            print(f"MinIO secret keys: {run.path / PEOPLE_FILE}")
        elif args.command == "status":
            for name, entry in run.load()["services"].items():
                alive = "running" if pid_alive(int(entry["pid"])) else "DEAD"
                print(f"{name:26} pid={entry['pid']:<8} {alive:8} log={entry['log']}")
    except ServiceError as error:
        print(f"localenv: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
