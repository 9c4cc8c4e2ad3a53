"""A Prometheus scrape config for both LBs of a plan (the example in ``docs/prometheus.yml``, and
what ``up --with-monitoring`` runs in the lab)."""

from __future__ import annotations

from hapair.plan import Plan
from hapair.render import render_template


def render_prometheus(plan: Plan, password_file: str) -> str:
    """``prometheus.yml`` scraping the agents and HAProxy's exporter on both LBs.

    :param password_file: a file holding the stats page's password (Prometheus reads it).
    """
    spec = plan.spec
    return render_template(
        "prometheus.yml.j2",
        cluster=plan.name,
        lbs=list(plan.lbs),
        admin_port=spec.admin.port,
        stats_port=spec.haproxy.stats_port,
        stats_user=spec.haproxy.stats_user,
        password_file=password_file,
    )
