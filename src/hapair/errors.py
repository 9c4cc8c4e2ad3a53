"""The exception tree of hapair.

- ``HapairError``: root of everything hapair raises on purpose.
  - ``SpecError`` (also ``ValueError``): the spec is invalid; the message names the
    field and the fix.
    The CLI exits 2.
  - ``UsageError``: the command line asks for something impossible (unknown node, ...). Exit 2.
  - ``EnvironmentProblem``: the machine lacks something (root, a tool). Exit 1.
  - ``OperationError``: an operation failed while it ran (a process, netlink, AWS). Exit 1.
    - ``ResourceError``: a floating-IP resource agent failed (keeps ``code``).
    - ``CloudError``: an AWS call failed (keeps the AWS error ``code`` and the ``resource``).
  - ``FatalError``: the agent cannot go on; the only error that may escape a cycle.
"""

from __future__ import annotations


class HapairError(Exception):
    """Root of every error hapair raises on purpose."""


class SpecError(HapairError, ValueError):
    """The cluster spec is invalid. ``problems`` holds one line per field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class UsageError(HapairError):
    """The request cannot be carried out as asked (unknown node, bad argument)."""


class EnvironmentProblem(HapairError):
    """The machine lacks what hapair needs (root, a command); the message says how to fix it."""


class OperationError(HapairError):
    """An operation failed while it ran."""

    def __init__(self, message: str, code: str | int | None = None) -> None:
        self.code = code
        super().__init__(message)


class ResourceError(OperationError):
    """A floating-IP resource agent failed to start, stop or monitor its address."""


class CloudError(OperationError):
    """An AWS call failed; ``code`` is the AWS error code, ``resource`` what it concerned."""

    def __init__(self, message: str, code: str | None = None, resource: str | None = None) -> None:
        self.resource = resource
        super().__init__(message, code)


class FatalError(HapairError):
    """The agent cannot continue (for instance, its key or config is gone)."""
