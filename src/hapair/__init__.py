"""hapair: an active-active pair of HAProxy load balancers with two floating IPs."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
