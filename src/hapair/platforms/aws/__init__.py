"""The ``aws`` platform: the seed's Terraform stack built with boto3 and found again by tags."""

from __future__ import annotations

from hapair.platforms.aws.platform import AwsPlatform

__all__ = ["AwsPlatform"]
