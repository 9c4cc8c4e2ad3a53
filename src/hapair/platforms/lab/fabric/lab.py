"""Building the aws fabric in a lab (``lab.fabric = "aws"``), and what it tells the rest.

At ``up``, after the VPC bridge is wired: the namespace ``<c>-aws`` is plugged into the VPC
bridge at :func:`~hapair.spec_fabric.fabric_address` and runs the moto EC2 API
(:mod:`.moto_main`) under a supervisor. Through that API, as the cluster's Terraform would on
AWS, ``up`` creates the VPC, the subnet, one ENI per LB (its primary and secondary address,
tagged ``hapair:role=lb`` and ``hapair:cluster``: what the ``aws_eip`` agent checks before a
move) and allocates the two EIPs *with the lab's VIP addresses* (``AllocateAddress(Address=...)``,
as a BYOIP pool would), each associated with its home LB's primary address. No instances: the
``aws_eip`` agent calls only DescribeAddresses, DescribeNetworkInterfaces, AssociateAddress and
CreateTags. Then the fabric controller (:mod:`.controller`) starts in the igw under a
supervisor, and ``up`` waits until the igw translates each EIP to its home LB.

The LBs never put a VIP on their interface in this mode: their agents run the ``aws_eip``
resource agent against the fabric's endpoint, with dummy credentials (moto accepts any). ``down``
removes the namespace (the controller goes with the igw's).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapair import netns
from hapair.errors import OperationError
from hapair.fileio import write_atomic
from hapair.plan import Plan
from hapair.platforms.base import Progress, no_progress
from hapair.platforms.lab import network, procs, supervise
from hapair.platforms.lab.fabric.moto_main import read_calls
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.system import run
from hapair.spec_fabric import FABRIC_PORT, endpoint_url, fabric_address

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

#: The fabric's region (any name moto knows; nothing leaves the lab).
REGION = "us-east-1"
#: How often the fabric controller reads DescribeAddresses, milliseconds.
POLL_MS = 50
#: The supervised services: moto in ``<c>-aws``, the controller in ``<c>-igw``.
MOTO, CONTROLLER = "moto", "fabric"
#: Dummy credentials (moto accepts any), no configuration files, no proxy, no instance
#: metadata: an AWS client of the lab talks to the lab's endpoint only.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "hapair-lab",
    "AWS_SECRET_ACCESS_KEY": "hapair-lab",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "*",
    "no_proxy": "*",
}


def is_aws(plan: Plan) -> bool:
    """Whether the lab wears the aws fabric."""
    return plan.spec.lab.fabric == "aws"


def namespace(name: str) -> str:
    """The fabric's namespace of lab ``name``."""
    return f"{name}-aws"


def folder(name: str) -> Path:
    """Where the fabric keeps its files (in the lab's state directory)."""
    return LabPaths(name).root / "fabric"


def config_file(name: str) -> Path:
    """What ``up`` created in the API: endpoint, ENIs, EIPs (JSON)."""
    return folder(name) / "aws.json"


def applied_file(name: str) -> Path:
    """What the igw does now, written by the controller (JSON)."""
    return folder(name) / "applied.json"


def calls_file(name: str) -> Path:
    """Every association change the API handled (JSON lines, :mod:`.moto_main`)."""
    return folder(name) / "calls.jsonl"


def service_env(base: dict[str, str]) -> dict[str, str]:
    """``base`` with the lab's AWS settings (:data:`AWS_ENV`) and no proxy variables."""
    env = {k: v for k, v in base.items() if not k.lower().endswith("_proxy")}
    return {**env, **AWS_ENV}


def _client(endpoint: str) -> EC2Client:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=1,
        read_timeout=5,
        proxies={},  # never a proxy from the environment: the endpoint is in the lab
    )
    client: EC2Client = boto3.session.Session().client(
        "ec2",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=config,
    )
    return client


def call_api(plan: Plan, work: Callable[[EC2Client], Any]) -> Any:
    """Run ``work(client)`` in a thread inside the fabric's namespace (the only place, with
    the lab's other namespaces, from which its endpoint can be reached).

    :raises OperationError: the namespace cannot be entered or the call failed.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    def inside(_ns: str) -> Any:
        try:
            return work(_client(endpoint_url(plan.spec)))
        except (BotoCoreError, ClientError) as exc:
            raise OSError(str(exc)) from exc

    got = netns.call_in([namespace(plan.name)], inside)[namespace(plan.name)]
    if isinstance(got, OSError):
        raise OperationError(f"aws fabric: {got}") from got
    return got


def _wire(plan: Plan) -> None:
    ns, address = namespace(plan.name), fabric_address(plan.spec)
    run(
        ["ip", "-n", plan.vpc_namespace, "-batch", "-"],
        input=f"link add aws type veth peer name {network.IFNAME} "
        f"address {network.mac_of(address)} netns {ns}\nlink set aws master br0 up\n",
    )
    run(
        ["ip", "-n", ns, "-batch", "-"],
        input=f"link set {network.IFNAME} up\n"
        f"addr add {address}/{plan.prefixlen} dev {network.IFNAME}\n",
    )


def _seed(plan: Plan, ec2: EC2Client) -> dict[str, Any]:
    """Create what the Terraform of the seed creates for the EIPs; returns the config."""
    name = plan.name
    cidr = plan.spec.network.vpc_cidr

    def tags(kind: str, label: str, **extra: str) -> list[Any]:
        pairs = {"Name": f"{name}-{label}", "hapair:cluster": name, **extra}
        return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in pairs.items()]}]

    vpc = ec2.create_vpc(CidrBlock=cidr, TagSpecifications=tags("vpc", "vpc"))["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, TagSpecifications=tags("subnet", "net"))
    subnet_id = subnet["Subnet"]["SubnetId"]
    enis: dict[str, str] = {}
    for lb in plan.lbs:
        addresses = [{"PrivateIpAddress": lb.address, "Primary": True}]
        if lb.secondary:
            addresses.append({"PrivateIpAddress": lb.secondary, "Primary": False})
        eni = ec2.create_network_interface(
            SubnetId=subnet_id,
            PrivateIpAddresses=addresses,  # type: ignore[arg-type]
            TagSpecifications=tags("network-interface", lb.name, **{"hapair:role": "lb"}),
        )
        enis[lb.name] = eni["NetworkInterface"]["NetworkInterfaceId"]
    eips: dict[str, dict[str, str]] = {}
    for v in plan.vips:
        got = ec2.allocate_address(
            Domain="vpc", Address=v.address, TagSpecifications=tags("elastic-ip", v.name)
        )
        eips[v.name] = {"allocation": got["AllocationId"], "address": v.address, "home": v.home}
        ec2.associate_address(
            AllocationId=got["AllocationId"],
            NetworkInterfaceId=enis[v.home],
            PrivateIpAddress=plan.node(v.home).address,
            AllowReassociation=True,
        )
    return {
        "endpoint": endpoint_url(plan.spec),
        "region": REGION,
        "vpc": vpc,
        "subnet": subnet_id,
        "enis": enis,
        "eips": eips,
        "inet_if": network.IGW_INET_IF,
    }


def _wait_api(plan: Plan, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            call_api(plan, lambda ec2: ec2.describe_addresses())
            return
        except OperationError as exc:
            if time.monotonic() > deadline:
                log = LabPaths(plan.name).log("aws", MOTO)
                raise OperationError(
                    f"the aws fabric's EC2 API did not answer within {timeout:.0f} s ({exc}); "
                    f"see {log}"
                ) from exc
        time.sleep(0.1)


def start(
    plan: Plan,
    paths: LabPaths,
    env: dict[str, str],
    progress: Progress = no_progress,
    delay_s: float = supervise.RESTART_DELAY_S,
    timeout: float = 30.0,
) -> None:
    """Build the fabric (see the module docstring); the VPC bridge and the igw must exist.

    :param env: the environment of the lab's services (the AWS settings are added).
    :raises OperationError: the API or the controller did not come up in time.
    """
    import sys

    name = plan.name
    ns = namespace(name)
    progress(f"start the aws fabric: EC2 API (moto) on {endpoint_url(plan.spec)}")
    network.create_namespaces(plan, only=[ns])
    _wire(plan)
    folder(name).mkdir(parents=True, exist_ok=True, mode=0o700)
    calls_file(name).unlink(missing_ok=True)
    moto = [sys.executable, "-m", "hapair.platforms.lab.fabric.moto_main"]
    moto += ["--host", fabric_address(plan.spec), "--port", str(FABRIC_PORT)]
    moto += ["--latency-ms", str(plan.spec.lab.eip_api_latency_ms)]
    supervise.start(
        ns,
        MOTO,
        [*moto, "--calls", str(calls_file(name))],
        out=paths.log("aws", MOTO),
        log=paths.log("aws", "supervisor"),
        pidfile=paths.pidfile("aws", MOTO),
        env=service_env(env),
        delay_s=delay_s,
    )
    _wait_api(plan, timeout)
    progress("create the VPC, the LBs' ENIs and the two EIPs in it")
    cfg = call_api(plan, lambda ec2: _seed(plan, ec2))
    write_atomic(config_file(name), json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    start_controller(plan, paths, env, delay_s)
    progress("wait until the igw translates each EIP to its home LB")
    deadline = time.monotonic() + timeout
    while owners(plan) != {v.name: [v.home] for v in plan.vips}:
        if time.monotonic() > deadline:
            raise OperationError(
                f"the aws fabric's controller did not apply the EIPs within {timeout:.0f} s; "
                f"see {paths.log('igw', CONTROLLER)}"
            )
        time.sleep(0.05)


def start_controller(plan: Plan, paths: LabPaths, env: dict[str, str], delay_s: float) -> None:
    """Start the fabric controller in the igw, under a supervisor."""
    import sys

    name = plan.name
    applied_file(name).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "hapair.platforms.lab.fabric.controller"]
    argv += ["--config", str(config_file(name)), "--applied", str(applied_file(name))]
    argv += ["--delay-ms", str(plan.spec.lab.eip_propagation_ms), "--poll-ms", str(POLL_MS)]
    supervise.start(
        plan.node("igw").namespace,
        CONTROLLER,
        argv,
        out=paths.log("igw", CONTROLLER),
        log=paths.log("igw", "supervisor"),
        pidfile=paths.pidfile("igw", CONTROLLER),
        env=service_env(env),
        delay_s=delay_s,
    )


def stop(name: str, progress: Progress = no_progress) -> bool:
    """Stop the fabric's API and remove its namespace (idempotent; the controller goes with
    the igw). Returns whether it was there."""
    ns = namespace(name)
    pattern = re.compile(rf"^{re.escape(ns)}$")
    if not any(pattern.match(n) for n in network.existing_namespaces()):
        return False
    progress("stop the aws fabric's EC2 API and remove its namespace")
    procs.kill_namespace(ns)
    network.remove_namespace(ns)
    return True


def load_config(name: str) -> dict[str, Any]:
    """What ``up`` created in the API.

    :raises OperationError: the lab has no aws fabric (or ``up`` did not get that far).
    """
    try:
        data: dict[str, Any] = json.loads(config_file(name).read_text())
    except (OSError, ValueError) as exc:
        raise OperationError(
            f"lab {name} has no aws fabric configuration ({config_file(name)}): run "
            f"`hapair down --name {name}` and `hapair up --fabric aws` again"
        ) from exc
    return data


def applied(name: str) -> dict[str, Any]:
    """The controller's last written state (empty before its first write)."""
    try:
        data: dict[str, Any] = json.loads(applied_file(name).read_text())
    except (OSError, ValueError):
        return {}
    return data


def owners(plan: Plan) -> dict[str, list[str]]:
    """For each VIP, the LB the igw sends it to right now ([]: associated with nothing, or with
    an address that is no LB's)."""
    targets: dict[str, str | None] = applied(plan.name).get("applied", {})
    by_address = {a: lb.name for lb in plan.lbs for a in (lb.address, lb.secondary) if a}
    out: dict[str, list[str]] = {}
    for v in plan.vips:
        target = targets.get(v.address)
        out[v.name] = [by_address[target]] if target in by_address else []
    return out


def calls(name: str, op: str = "AssociateAddress") -> list[dict[str, Any]]:
    """The API's log of ``op`` calls, oldest first (see :mod:`.moto_main`)."""
    return [c for c in read_calls(calls_file(name)) if c.get("op") == op]


def agent_settings(plan: Plan, node: str) -> dict[str, Any]:
    """What LB ``node``'s agent.toml takes from the fabric: the endpoint, the region and each
    VIP as an ``aws_eip`` (its allocation, this node's ENI, and the private address: the
    primary for its home VIP, the secondary for the peer's, as the seed)."""
    from hapair.agent.config import VipConfig

    cfg = load_config(plan.name)
    me = plan.node(node)
    vips = [
        VipConfig(
            name=v.name,
            address=v.address,
            home=v.home,
            driver="aws_eip",
            allocation_id=cfg["eips"][v.name]["allocation"],
            eni_id=cfg["enis"][node],
            private_ip=me.address if v.home == node else str(me.secondary or me.address),
        )
        for v in plan.vips
    ]
    return {"aws_endpoint_url": cfg["endpoint"], "aws_region": cfg["region"], "vips": vips}
