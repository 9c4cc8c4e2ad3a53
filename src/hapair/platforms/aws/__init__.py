"""The ``aws`` platform: the seed's Terraform stack built with boto3 and found again by tags.

``AwsPlatform`` is imported on first use, not with the package: the LBs run modules of this
package as ``python -m hapair.platforms.aws.nodesync`` (and ``follower``), which must not be
imported once already before they run as ``__main__`` (Python warns about it in every run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hapair.platforms.aws.platform import AwsPlatform

__all__ = ["AwsPlatform"]


def __getattr__(name: str) -> Any:
    if name == "AwsPlatform":
        from hapair.platforms.aws.platform import AwsPlatform

        return AwsPlatform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
