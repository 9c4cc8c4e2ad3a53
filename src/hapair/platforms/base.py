"""The Platform interface: what `hapair up/down/status` need from where the stack runs."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from hapair.plan import Plan

#: Reports progress: called with a short step description ("create namespaces") as each step starts.
Progress = Callable[[str], None]


def no_progress(step: str) -> None:
    """A progress callback that says nothing."""


class Platform(abc.ABC):
    """Where a cluster runs. Implementations: ``lab`` (namespaces) and ``aws`` (boto3)."""

    @abc.abstractmethod
    def up(self, plan: Plan, progress: Progress = no_progress) -> None:
        """Build everything the plan describes; idempotent: a second call changes nothing.

        :raises HapairError: with a message that says what failed; a later ``down`` cleans up.
        """

    @abc.abstractmethod
    def down(self, name: str, progress: Progress = no_progress) -> bool:
        """Remove everything ``up`` made for cluster ``name``; idempotent.

        :returns: whether anything was found to remove.
        """

    @abc.abstractmethod
    def status(self, name: str) -> dict[str, Any]:
        """The cluster as it is now: at least ``{"name", "nodes": [{"name", "role", "address"}],
        "vips": [{"name", "address", "home", "owner"}], "backends": [...]}``.

        :raises UsageError: no cluster of that name.
        """
