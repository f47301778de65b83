"""The `aiops` command: run the operator, generate CRDs, run a worker. The local development
environment adds its commands (`aiops dev ...`, `aiops kubectl`) through the `aiops.commands`
entry points, so the product never imports it (aiops.devenv.cli)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

COMMANDS = "aiops.commands"


def _cmd_run(args: argparse.Namespace) -> int:
    from aiops.controllers.settings import allowed_host_paths, step_job_ttl, validation_job_ttl
    from aiops.kube.lease import LeaderElectionError, LeaseSettings
    from aiops.runner import run_operator

    try:
        lease = LeaseSettings.for_duration(args.lease_name, args.lease_namespace, lease_duration=args.lease_duration) \
            if args.leader_elect else None
        validation_job_ttl()  # settings from the environment: wrong ones stop the start, not a reconcile
        step_job_ttl()
        allowed_host_paths()
    except (LeaderElectionError, ValueError) as e:
        print(f"aiops: {e}", file=sys.stderr)
        return 2
    return run_operator(namespaces=args.namespace, all_namespaces=not args.namespace,
                        liveness=args.liveness, metrics_port=args.metrics_port, leader_election=lease)


def _cmd_crds(args: argparse.Namespace) -> int:
    from aiops.api import crds

    if args.check:
        stale = crds.check_crds(Path(args.out))
        docs = Path(args.docs)
        if not docs.exists() or docs.read_text() != crds.render_api_docs():
            stale.append(str(docs))
        if stale:
            print("out of date (run `make crds`): " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for path in crds.write_crds(Path(args.out)):
        print(path)
    Path(args.docs).write_text(crds.render_api_docs())
    print(args.docs)
    return 0


def _cmd_worker_validate_model(args: argparse.Namespace) -> int:
    from aiops.worker.validate_model import run

    return run(spec_file=Path(args.spec), repository=Path(args.repository),
               validation_set=Path(args.validation_set) if args.validation_set else None,
               result_file=Path(args.result))


WORKER_MODULES = {"train": "train", "embed": "embed"}
"""Workers with many options own their argument parsing (`main(argv)`); `main` hands them argv."""


class UserError(RuntimeError):
    """A failure the user can fix from its message alone (a command prints it, no traceback)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument("-n", "--namespace", action="append", default=[],
                     help="watch only this namespace (repeatable); default: all namespaces")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                     help="health endpoint for the Deployment's probes")
    run.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0: off)")
    run.add_argument("--leader-elect", action="store_true",
                     help="reconcile only while holding a coordination.k8s.io Lease (replicas > 1)")
    run.add_argument("--lease-name", default="aiops-operator", help="the leader-election Lease")
    run.add_argument("--lease-namespace", default=None, help="its namespace (default: $POD_NAMESPACE)")
    run.add_argument("--lease-duration", type=int, default=15, help="seconds a standby waits before taking over")
    run.set_defaults(func=_cmd_run)

    crds = sub.add_parser("crds", help="write the CRDs and the API reference from the pydantic models")
    crds.add_argument("--out", default="crds")
    crds.add_argument("--docs", default="docs/api.md")
    crds.add_argument("--check", action="store_true", help="fail if the checked-in files are stale")
    crds.set_defaults(func=_cmd_crds)

    worker = sub.add_parser("worker", help="the work that runs in Job pods").add_subparsers(
        dest="worker_command", required=True)
    vm = worker.add_parser("validate-model", help="validate a model version before it serves")
    vm.add_argument("--spec", required=True, help="the ModelDeployment spec as JSON or YAML (a mounted ConfigMap)")
    vm.add_argument("--repository", required=True, help="the mounted Triton model repository")
    vm.add_argument("--validation-set", help="JSON Lines file of the spec's validation set, if any")
    vm.add_argument("--result", default=os.environ.get("AIOPS_RESULT_FILE", "/dev/termination-log"),
                    help="where the JSON verdict goes (the container's termination message)")
    vm.set_defaults(func=_cmd_worker_validate_model)
    # Listed for --help only: `main` hands these their argv before this parser sees it.
    worker.add_parser("train", help="data validation, training, optimization and export of a TrainingJob")
    worker.add_parser("embed", help="ingest documents into a VectorIndex: embed and upsert")

    for command in entry_points(group=COMMANDS):  # `aiops dev ...` and `aiops kubectl` (aiops.devenv.cli)
        add_commands = _load_commands(command)
        if add_commands is not None:
            add_commands(sub)
    return parser


def _load_commands(command: EntryPoint):
    """The function an `aiops.commands` entry point names, or None where its module is not installed:
    the images leave the development environment out while the package's metadata still names it.
    A module that is there but fails to import is a bug, and raises."""
    try:
        return command.load()
    except ModuleNotFoundError as e:
        if e.name and (command.module == e.name or command.module.startswith(e.name + ".")):
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    from aiops import logs

    level = os.environ.get("AIOPS_LOG_LEVEL", "INFO")
    logs.configure(level, os.environ.get("AIOPS_LOG_FORMAT", "text"))
    if level != "DEBUG":
        # Kopf logs "Handler ... succeeded" per watched event; our controllers log what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        logs.about_from_environment()
    if argv[:1] == ["worker"] and argv[1:2] and argv[1] in WORKER_MODULES:
        # These workers parse their own options; argparse's REMAINDER cannot pass on a leading --flag.
        import importlib

        return importlib.import_module(f"aiops.worker.{WORKER_MODULES[argv[1]]}").main(argv[2:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except UserError as e:  # one clear line for known failures; tracebacks are for bugs
        print(f"aiops: {e}", file=sys.stderr)
        return 1

