"""The lab's AWS fabric (``lab.fabric = "aws"``): the lab's VPC behaves like EC2's edge.

- :mod:`.moto_main`: a moto EC2 API in its own namespace ``<c>-aws`` on the VPC segment (plain
  HTTP on a 198.18.0.0/15 address: it never leaves the lab), which honours ``PrivateIpAddress``
  and logs every association change it handles.
- :mod:`.edge`: pure: the propagation delay and the igw's nftables maps.
- :mod:`.controller`: the fabric controller in the igw: polls ``DescribeAddresses`` and
  applies each association change to the igw's DNAT/SNAT maps after the propagation delay.
- :mod:`.lab`: building it at ``up`` (seeding the VPC, ENIs and EIPs), the agents' settings,
  what it says about owners and calls, and ``down``.
"""
