"""Running the probe on a lab's client host in the background, and reading its samples back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hapair.bench.probe import Sample
from hapair.errors import OperationError
from hapair.plan import Plan


class BackgroundProbe:
    """``python -m hapair.bench.probe`` inside ``<c>-inet``; bounded by its own duration."""

    def __init__(
        self,
        plan: Plan,
        targets: list[str],
        rate: float,
        duration: float,
        timeout: float = 1.0,
        dns_aware: bool = False,
        epoch: float | None = None,
        stream: bool = False,
        keepalive: bool = False,
        tls: bool = False,
    ) -> None:
        self.plan = plan
        self.duration = duration
        self.epoch = time.monotonic() if epoch is None else epoch
        self._dir = tempfile.TemporaryDirectory(prefix="hapair-probe-")
        self.out = Path(self._dir.name) / "samples.jsonl"
        argv = [
            "ip",
            "netns",
            "exec",
            plan.node("inet").namespace,
            sys.executable,
            "-m",
            "hapair.bench.probe",
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--timeout",
            str(timeout),
            "--host",
            plan.spec.cluster.domain,
            "--port",
            str(plan.spec.haproxy.https_port if tls else plan.spec.haproxy.http_port),
            "--epoch",
            repr(self.epoch),
            "--out",
            str(self.out),
        ]
        for t in targets:
            argv += ["--target", t]
        if dns_aware:
            argv.append("--dns-aware")
        if stream:
            argv.append("--stream")
        if tls:
            argv.append("--tls")
        if keepalive:
            argv.append("--keepalive")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait(self) -> list[Sample]:
        """Wait for the probe to finish; its samples, ordered by start time."""
        try:
            _, err = self.proc.communicate(timeout=self.duration + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise OperationError("the probe did not finish in time") from None
        if self.proc.returncode != 0:
            raise OperationError(f"the probe failed: {err.decode(errors='replace')[-500:]}")
        samples = [Sample(**json.loads(line)) for line in self.out.read_text().splitlines()]
        self._dir.cleanup()
        return sorted(samples, key=lambda s: s.start)

    def samples(self) -> list[Sample]:
        """The samples written so far (only with ``stream=True``), in completion order."""
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(Sample(**json.loads(line)))
            except ValueError:
                break  # a line being written right now
        return out

    def stop(self) -> list[Sample]:
        """End the run early (requests in flight finish) and return every sample."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def now(self) -> float:
        """Seconds since the probe's epoch (the same clock as the samples)."""
        return time.monotonic() - self.epoch
