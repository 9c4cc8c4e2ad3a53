"""A running lab as day-2 operations see it: its plan, its state, and a lock."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hapair.errors import UsageError
from hapair.fileio import exclusive_lock
from hapair.plan import Plan, make_plan
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.state import save_state
from hapair.platforms.lab.system import require_root
from hapair.spec import Spec


@dataclass
class Target:
    """The running lab ``plan.name``: ``state["spec"]`` is the spec it runs (saved, atomically,
    as each operation completes a step that changes it)."""

    plan: Plan
    state: dict[str, Any]

    @property
    def name(self) -> str:
        """The lab's name."""
        return self.plan.name

    @property
    def paths(self) -> LabPaths:
        """Its files."""
        return LabPaths(self.plan.name)

    @property
    def delay(self) -> float:
        """Its supervisors' restart delay (seconds)."""
        return float(self.state.get("restart_delay", 1.0))

    @property
    def engine(self) -> str:
        """Who moves its floating IPs (``hapair``, ``static`` or ``none``)."""
        return str(self.state.get("engine", "hapair"))

    def save(self, spec: Spec | None = None) -> None:
        """Record ``spec`` (when given) as the running one, and write the state file."""
        if spec is not None:
            self.plan = make_plan(spec)
            self.state["spec"] = spec.model_dump(mode="json")
        save_state(self.name, self.state)


@contextlib.contextmanager
def open_lab(name: str) -> Iterator[Target]:
    """The running lab ``name``, locked for one day-2 operation at a time.

    :raises UsageError: no such lab, it is only half built, or another day-2 operation holds it.
    """
    from hapair.platforms.lab.platform import LabPlatform

    require_root()
    plan, state = LabPlatform().plan_of(name)
    if not state.get("complete"):
        raise UsageError(f"lab {name} is half built: run `hapair up --name {name}` first")
    lock = LabPaths(name).root / "day2.lock"
    busy = f"another day-2 operation (scale, apply, restart, cert) is running on lab {name}"
    with exclusive_lock(lock, busy):
        yield Target(plan, state)
