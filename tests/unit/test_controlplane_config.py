"""Control-plane start-up checks that need no binaries."""

import socket
from pathlib import Path

import pytest

from aiops.devenv.controlplane import ControlPlaneError, LocalControlPlane, Ports
from aiops.devenv.toolchain import Toolchain

FAKE_TOOLS = Toolchain(*(Path("/nonexistent") / n for n in
                         ("apiserver", "cm", "scheduler", "etcd", "kubectl", "helm")))


def test_busy_port_stops_with_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        free = Ports.free()
        cp = LocalControlPlane(tmp_path, Ports(free.etcd_client, free.etcd_peer, port))
        with pytest.raises(ControlPlaneError, match=f"port {port} \\(apiserver\\).*busy"):
            cp.up(tools=FAKE_TOOLS)
    assert cp.pids() == {}


def test_free_ports_are_distinct():
    p = Ports.free()
    assert len({p.etcd_client, p.etcd_peer, p.apiserver}) == 3


def test_not_running_without_state(tmp_path):
    cp = LocalControlPlane(tmp_path / "none")
    assert not cp.is_running()
    assert cp.pids() == {}
