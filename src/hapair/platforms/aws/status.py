"""``hapair status`` for aws: nodes and EIP owners, read from an inventory. Pure."""

from __future__ import annotations

import re
from typing import Any

from hapair.platforms.aws.client import TAG_NODE, TAG_ROLE, TAG_VIP, tags_of
from hapair.platforms.aws.inventory import Inventory


def _order(name: str) -> tuple[int, str, int]:
    m = re.match(r"^([a-z]+)(\d*)$", name)
    if not m:
        return (2, name, 0)
    kind, num = m.group(1), int(m.group(2) or 0)
    return (0 if kind == "lb" else 1, kind, num)


def _slot(inv: Inventory, eni_id: str | None, private_ip: str | None) -> str | None:
    for eni in inv.enis:
        if eni["NetworkInterfaceId"] == eni_id:
            for a in eni.get("PrivateIpAddresses", []):
                if a.get("PrivateIpAddress") == private_ip:
                    return "primary" if a.get("Primary") else "secondary"
    return None


def cluster_status(inv: Inventory) -> dict[str, Any]:
    """``{"name", "platform", "nodes", "vips", "backends"}`` of the cluster in ``inv``.

    A VIP's ``owner`` is the node whose ENI its EIP is associated with (``None`` when it is
    not associated); ``association`` says which ENI, private address and slot exactly.
    """
    nodes = []
    for inst in sorted(inv.instances, key=lambda i: _order(tags_of(i).get(TAG_NODE, ""))):
        tags = tags_of(inst)
        entry: dict[str, Any] = {
            "name": tags.get(TAG_NODE, inst["InstanceId"]),
            "role": tags.get(TAG_ROLE, ""),
            "address": inst.get("PrivateIpAddress", ""),
            "state": inst.get("State", {}).get("Name", ""),
            "instance": inst["InstanceId"],
            "type": inst.get("InstanceType", ""),
        }
        if inst.get("PublicIpAddress"):
            entry["public"] = inst["PublicIpAddress"]
        eni = inv.eni(entry["name"])
        if eni is not None:
            entry["eni"] = eni["NetworkInterfaceId"]
            secondary = [
                a["PrivateIpAddress"]
                for a in eni.get("PrivateIpAddresses", [])
                if not a.get("Primary")
            ]
            if secondary:
                entry["secondary"] = secondary[0]
        nodes.append(entry)
    vips = []
    for addr in sorted(inv.addresses, key=lambda a: tags_of(a).get(TAG_VIP, "")):
        tags = tags_of(addr)
        eni_id, private_ip = addr.get("NetworkInterfaceId"), addr.get("PrivateIpAddress")
        owner = inv.node_of_eni(eni_id) if eni_id else None
        vips.append(
            {
                "name": tags.get(TAG_VIP, addr["AllocationId"]),
                "address": addr.get("PublicIp", ""),
                "home": tags.get("hapair:home", ""),
                "owner": owner,
                "allocation_id": addr["AllocationId"],
                "association": (
                    {
                        "eni": eni_id,
                        "private_ip": private_ip,
                        "instance": addr.get("InstanceId"),
                        "slot": _slot(inv, eni_id, private_ip),
                    }
                    if eni_id
                    else None
                ),
            }
        )
    return {
        "name": inv.cluster,
        "platform": "aws",
        "nodes": nodes,
        "vips": vips,
        "backends": [],
    }
