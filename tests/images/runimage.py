"""Runs a built image with runc the way a pod runs it, without containerd or a kubelet: the image's
entrypoint/command and env, a numeric uid/gid, a read-only root filesystem, /tmp and /dev/shm as
writable scratch, every capability dropped, no new privileges, and the host's network (so a test
reaches the server on 127.0.0.1). The root filesystem is the image's own, mounted by buildah."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    """A bind mount from here (read-only unless said), or a tmpfs when `source` is None."""

    destination: str
    source: Path | None = None
    read_only: bool = True


def image_config(ref: str) -> dict:
    out = subprocess.run(["buildah", "inspect", "--type", "image", ref], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["OCIv1"]["config"]


def home_of(rootfs: Path, uid: int) -> str:
    """HOME as the CRI sets it: the uid's entry in the image's /etc/passwd, else /."""
    passwd = rootfs / "etc" / "passwd"
    for line in passwd.read_text().splitlines() if passwd.exists() else []:
        fields = line.split(":")
        if len(fields) > 5 and fields[2] == str(uid):
            return fields[5]
    return "/"


class ImageContainer:
    """`with ImageContainer(ref, workdir, command=..., args=...) as c:` runs until the block ends
    (or the process exits); `c.log()` is its output, `c.wait()` its exit code."""

    def __init__(self, ref: str, workdir: Path, *, command: list[str] | None = None, args: list[str] | None = None,
                 user: tuple[int, int] = (1000, 1000), env: dict[str, str] | None = None,
                 mounts: tuple[Mount, ...] = (), read_only_root: bool = True):
        self.ref, self.workdir = ref, workdir
        self.command, self.args, self.user = command, args, user
        self.env, self.mounts, self.read_only_root = dict(env or {}), mounts, read_only_root
        self.id = f"aiops-image-test-{os.getpid()}-{time.monotonic_ns()}"
        self.bundle, self.state = workdir / "bundle", workdir / "runc-state"
        self.log_file = workdir / "container.log"
        self.container: str | None = None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ImageContainer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> ImageContainer:
        self.bundle.mkdir(parents=True)
        self.container = subprocess.run(["buildah", "from", "--pull=never", self.ref], capture_output=True,
                                        text=True, check=True).stdout.strip()
        rootfs = Path(subprocess.run(["buildah", "mount", self.container], capture_output=True, text=True,
                                     check=True).stdout.strip())
        (self.bundle / "config.json").write_text(json.dumps(self.runtime_spec(rootfs), indent=1))
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(["runc", "--root", str(self.state), "run", "--bundle", str(self.bundle),
                                             self.id], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        return self

    def runtime_spec(self, rootfs: Path) -> dict:
        image = image_config(self.ref)
        subprocess.run(["runc", "spec", "--bundle", str(self.bundle)], check=True)
        spec = json.loads((self.bundle / "config.json").read_text())
        argv = (self.command if self.command is not None else image.get("Entrypoint") or []) + \
            (self.args if self.args is not None else (image.get("Cmd") or [] if self.command is None else []))
        uid, gid = self.user
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        env = {"HOME": home_of(rootfs, uid), **dict(e.split("=", 1) for e in image.get("Env") or []), **self.env}
        spec["process"].update(
            terminal=False, args=argv, cwd=image.get("WorkingDir") or "/", env=[f"{k}={v}" for k, v in env.items()],
            user={"uid": uid, "gid": gid}, noNewPrivileges=True,
            capabilities={k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
            # As many files as this host allows (raising the hard limit needs CAP_SYS_RESOURCE,
            # which this VM's root lacks): the CRI gives pods a high limit.
            rlimits=[{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}])
        spec["root"] = {"path": str(rootfs), "readonly": self.read_only_root}
        spec["hostname"] = "image-test"
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/dev/shm"] + [
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=1g"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf",
             "options": ["rbind", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": str(self.hosts_file()), "options": ["rbind", "ro"]},
            *[self.mount_entry(m) for m in self.mounts]]
        return spec

    def hosts_file(self) -> Path:
        """The kubelet's managed /etc/hosts for a pod on the host's network."""
        hosts = self.workdir / "hosts"
        hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        return hosts

    @staticmethod
    def mount_entry(mount: Mount) -> dict:
        if mount.source is None:
            return {"destination": mount.destination, "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777"]}
        return {"destination": mount.destination, "type": "bind", "source": str(mount.source),
                "options": ["rbind", "ro" if mount.read_only else "rw"]}

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def exec(self, *argv: str) -> str:
        """Runs a command in the running container (its uid, env and mounts); returns its output."""
        result = subprocess.run(["runc", "--root", str(self.state), "exec", self.id, *argv],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def signal(self, sig: signal.Signals) -> None:
        subprocess.run(["runc", "--root", str(self.state), "kill", self.id, sig.name.removeprefix("SIG")],
                       capture_output=True)

    def stop(self, grace: float = 10.0) -> None:
        if self.running():
            self.signal(signal.SIGTERM)
            try:
                self.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.wait(30)
        subprocess.run(["runc", "--root", str(self.state), "delete", "--force", self.id], capture_output=True)
        if self.container:
            subprocess.run(["buildah", "umount", self.container], capture_output=True)
            subprocess.run(["buildah", "rm", self.container], capture_output=True)
            self.container = None
