"""The boot rehearsal's instances: a Debian 12 root file system booted with systemd-nspawn.

- :func:`ensure_rootfs`: ``debootstrap`` bookworm once into ``/var/cache/hapair-rehearsal``
  (reused across runs) with what a Debian cloud image has before its user data runs: systemd,
  cloud-init, iproute2, ifupdown. Nothing the user data installs itself (HAProxy, python3-venv,
  openssl, ca-certificates) is there: the user data must install it, as on a fresh instance.
- :class:`Instance`: one boot. The cached tree is the lower layer of an overlay; the upper layer
  gets what EC2 would provide: the user data and an instance-id as a NoCloud seed, the node's
  private address on its interface (systemd-networkd, where EC2 has DHCP), and in the manager's
  environment the rehearsal's stand-ins for the metadata service (the role's credentials) and
  the VPC's way out (the package proxy). Nothing of that is in the user data: what it does is
  exactly what it would do on EC2.
- The container runs in the rehearsal's namespace on its bridge, its console is logged as EC2's
  console output is, and commands run inside it through ``nsenter`` (no systemd on the host).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from . import rehearsal_net as net

CACHE = Path("/var/cache/hapair-rehearsal")
ROOTFS = CACHE / "bookworm"
RUNS = CACHE / "run"
MIRROR = "http://deb.debian.org/debian"
#: What a Debian 12 cloud image has before any user data (besides debootstrap's base system).
BASE_PACKAGES = ("systemd-sysv", "dbus", "iproute2", "ifupdown", "procps", "less")
#: Installed with apt in the new tree (debootstrap's resolver does not follow virtual packages,
#: which cloud-init's python3-cryptography needs).
CLOUD_PACKAGES = ("cloud-init",)
#: Written by :func:`finish_rootfs` (a tree without it is finished again).
MARKER = ".hapair-rehearsal-2"
#: Units that fail in any container, whatever the user data: not findings.
CONTAINER_MASKED = ("ifupdown-pre.service", "systemd-remount-fs.service")


def ensure_rootfs(log: Path) -> Path:
    """The cached Debian 12 tree; made with debootstrap when missing (into a temporary folder,
    renamed once complete, so an interrupted run leaves nothing half made behind).

    :raises RuntimeError: debootstrap failed (its log is ``log``).
    """
    if (ROOTFS / "usr/bin/cloud-init").exists():
        if not (ROOTFS / MARKER).exists():
            finish_rootfs(ROOTFS)
        return ROOTFS
    tmp = CACHE / "bookworm.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    argv = ["debootstrap", f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(tmp), MIRROR]
    with log.open("w") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, check=False)
        if proc.returncode == 0:
            apt = ["chroot", str(tmp), "sh", "-c"]
            apt.append(
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                + " ".join(CLOUD_PACKAGES)
            )
            proc = subprocess.run(apt, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"debootstrap or apt-get failed ({proc.returncode}): see {log}")
    finish_rootfs(tmp)
    tmp.rename(ROOTFS)
    return ROOTFS


def finish_rootfs(root: Path) -> None:
    """Make the tree look like an image that has never booted: no machine id, no host name,
    no apt lists or archives, no host's resolv.conf; en_US.UTF-8 generated (cloud-init's
    default locale on Debian: without it its locale module fails and every boot ends in
    ``status: error``; assumed present on Debian's cloud images)."""
    gen = root / "etc/locale.gen"
    text = gen.read_text() if gen.exists() else ""
    if "\nen_US.UTF-8 UTF-8" not in "\n" + text:
        gen.write_text(text + "en_US.UTF-8 UTF-8\n")
    subprocess.run(["chroot", str(root), "locale-gen"], check=False, capture_output=True)
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    subprocess.run(["chroot", str(root), "apt-get", "clean"], check=False, capture_output=True)
    lists = root / "var/lib/apt/lists"
    for p in lists.glob("*"):
        if p.is_file() and p.name != "lock":
            p.unlink()
    (root / MARKER).write_text("")


def systemd_env_dropin(env: Mapping[str, str]) -> str:
    """``/etc/systemd/system.conf.d`` drop-in giving every unit ``env`` (cloud-init's
    ``runcmd`` and the hapair units alike)."""
    quoted = " ".join(f'"{k}={v}"' for k, v in sorted(env.items()))
    head = "# hapair boot rehearsal only: stand-ins for IMDS and the VPC\n[Manager]\n"
    return f"{head}DefaultEnvironment={quoted}\n"


def network_file(address: str) -> str:
    """systemd-networkd: the node's private address on the container's interface."""
    return (
        "# hapair boot rehearsal: EC2's DHCP would give this address\n"
        f"[Match]\nName=host0\n\n[Network]\nAddress={address}/{net.PREFIXLEN}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )


CLOUD_CFG = (
    "# hapair boot rehearsal: the NoCloud seed stands in for EC2's metadata service; the\n"
    "# network is set up by systemd-networkd (as EC2's DHCP would), not by cloud-init.\n"
    "datasource_list: [NoCloud, None]\n"
    "network: {config: disabled}\n"
)


class Instance:
    """One booted node: an overlay over the cached tree, a NoCloud seed, a container."""

    def __init__(self, name: str, private_ip: str, instance_id: str, console: Path) -> None:
        self.name = name
        self.machine = f"hr-{name}"
        self.private_ip = private_ip
        self.instance_id = instance_id
        self.dir = RUNS / name
        self.root = self.dir / "root"
        self.console = console
        self.proc: subprocess.Popen[bytes] | None = None
        self._leader: int | None = None

    # ------------------------------------------------------------ file system
    def prepare(
        self, user_data: bytes, env: Mapping[str, str], files: Mapping[str, str] | None = None
    ) -> None:
        """Mount the overlay and write the seed, the address, the environment and ``files``
        (absolute path in the instance -> content)."""
        self.remove()
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={ROOTFS},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(self.root)],
            check=True,
            capture_output=True,
        )
        seed = self.root / "var/lib/cloud/seed/nocloud"
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "user-data").write_bytes(user_data)
        (seed / "meta-data").write_text(
            f"instance-id: {self.instance_id}\nlocal-hostname: {self.name}\n"
        )
        self._write("etc/cloud/cloud.cfg.d/05-hapair-rehearsal.cfg", CLOUD_CFG)
        self._write(
            "etc/systemd/network/10-hapair-rehearsal.network", network_file(self.private_ip)
        )
        self._write("etc/systemd/system.conf.d/90-hapair-rehearsal.conf", systemd_env_dropin(env))
        self._write("etc/resolv.conf", "# hapair boot rehearsal: no DNS; apt and pip use a proxy\n")
        self._write("etc/hostname", f"{self.name}\n")
        for path, text in (files or {}).items():
            self._write(path.lstrip("/"), text)
        for unit in CONTAINER_MASKED:
            mask = self.root / "etc/systemd/system" / unit
            mask.unlink(missing_ok=True)
            mask.symlink_to("/dev/null")
        wants = self.root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        online = self.root / "etc/systemd/system/network-online.target.wants"
        online.mkdir(parents=True, exist_ok=True)
        for link, target in (
            (wants / "systemd-networkd.service", "systemd-networkd.service"),
            (
                online / "systemd-networkd-wait-online.service",
                "systemd-networkd-wait-online.service",
            ),
        ):
            link.unlink(missing_ok=True)
            link.symlink_to(f"/lib/systemd/system/{target}")

    def _write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_text(text)

    def remove(self) -> None:
        """Unmount the overlay and delete this node's layer (the cached tree stays)."""
        if self.root.is_mount():
            subprocess.run(["umount", "-l", str(self.root)], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ container
    def boot(self) -> None:
        """Start the container (``systemd-nspawn --boot``) on the rehearsal's bridge."""
        argv = net.in_namespace(
            [
                "systemd-nspawn",
                "--boot",
                f"--directory={self.root}",
                f"--machine={self.machine}",
                "--register=no",  # no systemd-machined on a host without systemd
                "--keep-unit",  # nor a systemd to make a scope unit for it
                f"--network-bridge={net.BRIDGE}",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
                "--console=read-only",
            ]
        )
        out = self.console.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches the rehearsal, which stops it in order
        )
        out.close()

    def running(self) -> bool:
        """Whether the container is still up."""
        return self.proc is not None and self.proc.poll() is None

    def leader(self) -> int | None:
        """The container's PID 1 as the host sees it: the child of systemd-nspawn (which
        ``nsenter`` became) that is PID 1 in its own PID namespace."""
        if self._leader is not None and Path(f"/proc/{self._leader}").exists():
            return self._leader
        if self.proc is None:
            return None
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                status = (p / "status").read_text()
            except OSError:
                continue
            fields = dict(ln.split(":", 1) for ln in status.splitlines() if ":" in ln)
            if fields.get("PPid", "").strip() == str(self.proc.pid) and fields.get(
                "NSpid", ""
            ).split()[-1:] == ["1"]:
                self._leader = int(p.name)
                return self._leader
        return None

    def run(self, argv: list[str], timeout: float = 30.0) -> tuple[int, str]:
        """Run ``argv`` inside the container: (exit code, stdout and stderr); -1 when it could
        not run."""
        pid = self.leader()
        if pid is None:
            return -1, "the container has no PID 1 yet"
        cmd = ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--", *argv]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return -1, f"timed out after {timeout:.0f} s: {' '.join(argv)}"
        return proc.returncode, (proc.stdout + proc.stderr).strip()

    def read(self, rel: str, tail: int = 0) -> str:
        """A file of the container (its last ``tail`` lines when given), or ``""``."""
        try:
            text = (self.root / rel).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-tail:]) if tail else text

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the container down in order (SIGTERM to nspawn: the container's init gets
        its halt signal), killed after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        pid = self._leader
        if pid is not None and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
