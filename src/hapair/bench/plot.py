"""PNG timelines of a failover trial: each request as a dot, by who served it, around the fault."""

from __future__ import annotations

from pathlib import Path

from hapair.bench.probe import Sample


def plot_trial(
    plain: list[Sample],
    dns: list[Sample],
    t_fail: float,
    t_restore: float,
    title: str,
    path: Path,
) -> None:
    """Two panels (VIP1 client, DNS-aware client): request start time vs latency, colored by
    outcome (lb1, lb2, failed); vertical lines at the fault and the restore."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    panels = (("VIP1 client", plain), ("DNS-aware client (VIP1, then VIP2)", dns))
    for ax, (label, samples) in zip(axes, panels, strict=True):
        groups = {
            "served by lb1": ([s for s in samples if s.ok and s.lb == "lb1"], "tab:blue"),
            "served by lb2": ([s for s in samples if s.ok and s.lb == "lb2"], "tab:green"),
            "failed": ([s for s in samples if not s.ok], "tab:red"),
        }
        for g, (ss, color) in groups.items():
            if ss:
                ax.scatter(
                    [s.start - t_fail for s in ss],
                    [(s.end - s.start) * 1000 for s in ss],
                    s=4,
                    c=color,
                    label=f"{g} ({len(ss)})",
                )
        ax.axvline(0, color="black", linestyle="--", linewidth=1)
        ax.axvline(t_restore - t_fail, color="gray", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_ylabel("latency ms")
        ax.set_title(label, fontsize=9)
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
    axes[-1].set_xlabel("request start, s after the fault (dashed); dotted = restore")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
