"""The local development environment's commands, added to `aiops` through the `aiops.commands`
entry point (pyproject.toml): `aiops dev toolchain|images|up|down|env|node-agent|device-plugin|
local-path` and `aiops kubectl`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


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
    from aiops.devenv.imagecache import format_table
    from aiops.devenv.images import ImageBuildError, ensure_images

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
    from aiops.devenv.deviceplugin import run_until_signalled
    from aiops.devenv.deviceplugin_layout import LAYOUTS

    return run_until_signalled(LAYOUTS[args.layout](), Path(args.socket_dir))


def _cmd_dev_local_path(args: argparse.Namespace) -> int:
    from kubernetes import config

    from aiops.devenv.storage import run_until_signalled

    api = config.new_client_from_config(config_file=args.kubeconfig)
    return run_until_signalled(api, args.node, Path(args.root))


def _cmd_kubectl(args: argparse.Namespace) -> int:
    """kubectl from the cached toolchain, pointed at the local control plane."""
    from aiops.devenv.controlplane import LocalControlPlane
    from aiops.devenv.toolchain import ensure_kubectl_helm

    kubectl, _ = ensure_kubectl_helm()
    env = {**os.environ, "KUBECONFIG": str(LocalControlPlane().kubeconfig)}
    return subprocess.run([str(kubectl), *args.rest], env=env).returncode


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds `dev` and `kubectl` to the `aiops` parser's subcommands."""
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

    kc = sub.add_parser("kubectl", help="kubectl against the local control plane")
    kc.add_argument("rest", nargs=argparse.REMAINDER)
    kc.set_defaults(func=_cmd_kubectl)
