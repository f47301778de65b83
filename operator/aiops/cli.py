"""The `aiops` command: run the operator, generate CRDs, and drive the local dev environment."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from aiops.controllers.settings import step_job_ttl, validation_job_ttl
    from aiops.kube.lease import LeaderElectionError, LeaseSettings
    from aiops.runner import run_operator

    try:
        lease = LeaseSettings.for_duration(args.lease_name, args.lease_namespace, lease_duration=args.lease_duration) \
            if args.leader_elect else None
        validation_job_ttl()  # settings from the environment: wrong ones stop the start, not a reconcile
        step_job_ttl()
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


def _cmd_dev_toolchain(args: argparse.Namespace) -> int:
    from aiops.devenv.toolchain import ensure_node_packages, ensure_toolchain

    tools = ensure_toolchain()
    for name, path in vars(tools).items():
        print(f"{name}: {path}")
    missing = ensure_node_packages()
    if missing:
        print(f"the real node needs Debian's {', '.join(missing)} (as root: apt-get install {' '.join(missing)}); "
              "until then `make dev` runs the simulated node", file=sys.stderr)
    return 0


def _cmd_dev_images(args: argparse.Namespace) -> int:
    from aiops.devenv.images import ImageBuildError, ensure_images, format_table

    try:
        built = ensure_images(args.only or None)
    except ImageBuildError as e:
        print(f"aiops: {e}", file=sys.stderr)
        return 1
    print(format_table(built.values()))
    return 0


def _cmd_dev_up(args: argparse.Namespace) -> int:
    from aiops.devenv import session

    if args.foreground:
        return session.run_foreground(apply_dirs=args.apply, gpus=args.gpus,
                                      with_operator=not args.no_operator,
                                      metrics_port=args.metrics_port, health_port=args.health_port,
                                      node=args.node)
    env = session.up_background(gpus=args.gpus, node=args.node)
    print(env.kubeconfig)
    print(f"export KUBECONFIG={env.kubeconfig}", file=sys.stderr)
    return 0


def _cmd_dev_down(args: argparse.Namespace) -> int:
    from aiops.devenv import session

    session.down()
    print("local control plane and its node stopped")
    return 0


def _cmd_dev_env(args: argparse.Namespace) -> int:
    from aiops.devenv.controlplane import LocalControlPlane

    cp = LocalControlPlane()
    if not cp.is_running():
        print("the local control plane is not running: `make dev` or `aiops dev up`", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={cp.kubeconfig}")
    return 0


def _cmd_dev_node_agent(args: argparse.Namespace) -> int:
    from aiops.devenv import session

    return session.run_node_agent(gpus=args.gpus)


def _cmd_dev_device_plugin(args: argparse.Namespace) -> int:
    from aiops.devenv.deviceplugin import LAYOUTS, run_until_signalled

    return run_until_signalled(LAYOUTS[args.layout](), Path(args.socket_dir))


def _cmd_dev_local_path(args: argparse.Namespace) -> int:
    from kubernetes import config

    from aiops.devenv.storage import run_until_signalled

    api = config.new_client_from_config(config_file=args.kubeconfig)
    return run_until_signalled(api, args.node, Path(args.root))


def _cmd_worker_validate_model(args: argparse.Namespace) -> int:
    from aiops.worker.validate_model import run

    return run(spec_file=Path(args.spec), repository=Path(args.repository),
               validation_set=Path(args.validation_set) if args.validation_set else None,
               result_file=Path(args.result))


WORKER_MODULES = {"train": "train", "embed": "embed"}
"""Workers with many options own their argument parsing (`main(argv)`); `main` hands them argv."""


def _cmd_kubectl(args: argparse.Namespace) -> int:
    """kubectl from the cached toolchain, pointed at the local control plane."""
    from aiops.devenv.controlplane import LocalControlPlane
    from aiops.devenv.toolchain import ensure_kubectl_helm

    kubectl, _ = ensure_kubectl_helm()
    env = {**os.environ, "KUBECONFIG": str(LocalControlPlane().kubeconfig)}
    return subprocess.run([str(kubectl), *args.rest], env=env).returncode


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

    dev = sub.add_parser("dev", help="the local control plane with a simulated GPU node").add_subparsers(
        dest="dev_command", required=True)
    tc = dev.add_parser("toolchain", help="build/fetch the control plane, etcd, kubectl and helm")
    tc.set_defaults(func=_cmd_dev_toolchain)
    images = dev.add_parser("images", help="build the container images offline (buildah) into ~/.cache/aiops/images")
    images.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                        help="these images (and the local bases they build FROM): debian-python, operator, "
                             "tritonserver, worker, milvus, pause")
    images.set_defaults(func=_cmd_dev_images)
    up = dev.add_parser("up", help="start the control plane and the simulated GPU node")
    up.add_argument("--foreground", action="store_true",
                    help="also run the operator here; Ctrl-C stops everything")
    up.add_argument("--apply", action="append", default=[], help="kubectl apply this dir once up")
    up.add_argument("--node", choices=["auto", "real", "simulated"], default="auto",
                    help="the real node (containerd + kubelet) where this machine can run it, else simulated")
    up.add_argument("--gpus", type=int, default=2,
                    help="whole GPUs of the simulated node, beside the shared one (seed: 2, as gpuLayout)")
    up.add_argument("--no-operator", action="store_true", help="with --foreground: no operator")
    up.add_argument("--metrics-port", type=int, default=9090, help="operator /metrics port (0: off)")
    up.add_argument("--health-port", type=int, default=8080, help="operator /healthz port")
    up.set_defaults(func=_cmd_dev_up)
    dev.add_parser("down", help="stop everything `up` started").set_defaults(func=_cmd_dev_down)
    dev.add_parser("env", help="print the KUBECONFIG export line").set_defaults(func=_cmd_dev_env)
    agent = dev.add_parser("node-agent", help="run the simulated GPU node in the foreground")
    agent.add_argument("--gpus", type=int, default=2)
    agent.set_defaults(func=_cmd_dev_node_agent)
    dp = dev.add_parser("device-plugin", help="fake NVIDIA device plugins for a real kubelet, until SIGTERM/SIGINT")
    dp.add_argument("--socket-dir", default="/var/lib/kubelet/device-plugins",
                    help="the kubelet's device-plugin directory (holds kubelet.sock)")
    dp.add_argument("--layout", choices=["seed"], default="seed",
                    help="GPUs and plugin instances to imitate (seed: GPUs 0-1 whole, GPU 2 as 2 shared replicas)")
    dp.set_defaults(func=_cmd_dev_device_plugin)
    lp = dev.add_parser("local-path", help="the local-path volume provisioner of a real node, until SIGTERM/SIGINT")
    lp.add_argument("--kubeconfig", required=True, help="credentials that may create PersistentVolumes")
    lp.add_argument("--node", action="append", required=True, help="provision claims placed on this node")
    lp.add_argument("--root", required=True, help="directory that holds the volumes")
    lp.set_defaults(func=_cmd_dev_local_path)

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

    kc = sub.add_parser("kubectl", help="kubectl against the local control plane")
    kc.add_argument("rest", nargs=argparse.REMAINDER)
    kc.set_defaults(func=_cmd_kubectl)
    return parser


def main(argv: list[str] | None = None) -> int:
    level = os.environ.get("AIOPS_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        # Kopf logs "Handler ... succeeded" per watched event; our controllers log what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"] and argv[1:2] and argv[1] in WORKER_MODULES:
        # These workers parse their own options; argparse's REMAINDER cannot pass on a leading --flag.
        import importlib

        return importlib.import_module(f"aiops.worker.{WORKER_MODULES[argv[1]]}").main(argv[2:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one clear line for known failures; tracebacks are for bugs
        from aiops.devenv.controlplane import ControlPlaneError
        from aiops.devenv.toolchain import ToolchainError

        if isinstance(e, (ToolchainError, ControlPlaneError)):
            print(f"aiops: {e}", file=sys.stderr)
            return 1
        raise

