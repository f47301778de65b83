"""What a real node changes on its host, recorded before it starts and undone when it stops.

A kubelet, kube-proxy and the CNI bridge plugin change the machine they run on: sysctls
(`vm.overcommit_memory=1`, `kernel.panic=10`, `kernel.panic_on_oops=1`, `route_localnet=1`,
`ip_forward=1`), iptables chains (`KUBE-*`, `CNI-*`, and a KUBE-FIREWALL rule that drops
non-loopback traffic to 127.0.0.0/8), a bridge, mounts under the kubelet's root, cgroups, and
directories such as /var/log/pods. On a developer's machine or a CI runner those must go when the
node goes. The record is written once per node start, before anything changes, and kept until a
restore completes, so a node that crashed is still undone against what the host was before it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

# What the kubelet (setupKernelTunables), kube-proxy and the bridge plugin may set.
SYSCTLS = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.conf.all.route_localnet",
           "net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")
CHAIN_PREFIXES = ("KUBE-", "CNI-")
FAMILIES = ("iptables", "ip6tables")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAMES = ("kubepods", "kubepods.slice")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    out = {}
    for name in SYSCTLS:
        try:
            out[name] = _sysctl_path(name).read_text().strip()
        except OSError:  # e.g. bridge sysctls before br_netfilter is loaded
            pass
    return out


def iptables_save(family: str) -> str:
    exe = shutil.which(f"{family}-save")
    if not exe:
        return ""
    result = subprocess.run([exe], capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def chains_by_table(saved: str) -> dict[str, list[str]]:
    """{table: [chain, ...]} from iptables-save output."""
    tables: dict[str, list[str]] = {}
    table = None
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            tables[table] = []
        elif line.startswith(":") and table:
            tables[table].append(line[1:].split()[0])
    return tables


def cleanup_script(saved: str, before: dict[str, list[str]]) -> str:
    """An `iptables-restore --noflush` script removing the node's chains and every rule that
    jumps to them, keeping all else: rules in built-in or foreign chains are deleted one by one."""
    out: list[str] = []
    table = None
    rules: dict[str, list[str]] = {}
    chains: dict[str, list[str]] = {}
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            rules[table], chains[table] = [], []
        elif line.startswith(":") and table:
            chains[table].append(line[1:].split()[0])
        elif line.startswith("-A ") and table:
            rules[table].append(line)
    for table, names in chains.items():
        ours = [c for c in names if c.startswith(CHAIN_PREFIXES) and c not in before.get(table, [])]
        if not ours:
            continue
        ours_set = set(ours)
        deletes = []
        for rule in rules[table]:
            words = rule.split()
            chain = words[1]
            targets = {words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-j", "-g", "--jump", "--goto")}
            if chain not in ours_set and targets & ours_set:
                deletes.append("-D " + rule[3:])
        out += [f"*{table}", *deletes, *(f"-F {c}" for c in ours), *(f"-X {c}" for c in ours), "COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or under `roots`, deepest first (from /proc/self/mountinfo)."""
    found = []
    prefixes = [str(r).rstrip("/") for r in roots]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def cgroup_dirs() -> list[Path]:
    return [d / name for d in CGROUP_ROOT.iterdir() if d.is_dir() for name in CGROUP_NAMES if (d / name).is_dir()]


@dataclass
class HostRecord:
    sysctls: dict[str, str] = field(default_factory=dict)
    chains: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # family -> table -> chains
    paths: dict[str, bool] = field(default_factory=dict)  # path -> existed before
    cgroups: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # network links to delete

    @classmethod
    def take(cls, paths: list[Path], links: list[str]) -> HostRecord:
        return cls(sysctls=read_sysctls(),
                   chains={f: chains_by_table(iptables_save(f)) for f in FAMILIES},
                   paths={str(p): p.exists() for p in paths},
                   cgroups=[str(d) for d in cgroup_dirs()], links=links)

    def save(self, file: Path) -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.rename(file)

    @classmethod
    def load(cls, file: Path) -> HostRecord:
        return cls(**json.loads(file.read_text()))


def record_once(file: Path, paths: list[Path], links: list[str]) -> HostRecord:
    """The host as it was before the node: taken now, or the record of a node that never got
    restored (it knows the host better than a look at what that node left)."""
    if file.exists():
        return HostRecord.load(file)
    record = HostRecord.take(paths, links)
    record.save(file)
    return record


def unmount_all(*roots: Path) -> list[str]:
    """Unmounts everything under `roots`; lazily where busy. Returns what stayed mounted."""
    for point in mounts_under(*roots):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    return mounts_under(*roots)


def remove_cgroups(keep: list[str]) -> None:
    """rmdir of the kubelet's cgroup trees, leaves first (a cgroup with tasks refuses: ignored)."""
    for top in cgroup_dirs():
        if str(top) in keep:
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: w[0].count("/"), reverse=True):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def restore(record: HostRecord, file: Path | None = None) -> list[str]:
    """Undoes what the node changed; returns what could not be undone (empty when all was)."""
    problems = []
    for family in FAMILIES:
        script = cleanup_script(iptables_save(family), record.chains.get(family, {}))
        if script:
            result = subprocess.run([f"{family}-restore", "--noflush"], input=script, capture_output=True, text=True)
            if result.returncode != 0:
                problems.append(f"{family}: {result.stderr.strip()[-300:]}")
    for link in record.links:
        if Path(f"/sys/class/net/{link}").exists():
            subprocess.run(["ip", "link", "delete", link], capture_output=True)
    now = read_sysctls()
    for name, value in record.sysctls.items():
        if now.get(name) != value:
            try:
                _sysctl_path(name).write_text(value)
            except OSError as e:
                problems.append(f"sysctl {name}={value}: {e}")
    remove_cgroups(record.cgroups)
    for path, existed in record.paths.items():
        if not existed:
            leftover = unmount_all(Path(path))
            if leftover:
                problems.append(f"still mounted: {', '.join(leftover[:3])}")
            else:
                shutil.rmtree(path, ignore_errors=True)
    if not problems and file is not None:
        file.unlink(missing_ok=True)
    return problems
