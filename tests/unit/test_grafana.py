"""docs/grafana/hapair.json and docs/prometheus.yml: well-formed, and about metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from hapair.agent.metrics import Metrics
from hapair.plan import make_plan
from hapair.render.prometheus import render_prometheus
from hapair.spec import Spec

DOCS = Path(__file__).parents[2] / "docs"
METRIC = re.compile(r"(?<![$\w])((?:hapair|haproxy|process)_[a-z_]+)\b")


def dashboard_exprs() -> list[str]:
    d = json.loads((DOCS / "grafana" / "hapair.json").read_text())
    out = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    return out + [a["expr"] for a in d["annotations"]["list"]]


GRAFANA_VARS = {
    "agent_job": "hapair-agent",
    "haproxy_job": "hapair-haproxy",
    # What Grafana makes of them with the 5 s scrape interval of docs/prometheus.yml.
    "__rate_interval": "20s",
    "__interval": "5s",
    "__range": "5m",
}
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def filled(expr: str, node: str = ".*") -> str:
    """``expr`` with its template variables as Grafana fills them (``node``: the LB picker's
    value, ``.*`` for All); an unknown variable raises KeyError."""
    values = {**GRAFANA_VARS, "node": node}
    return VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], expr)


def variable_selectors() -> list[str]:
    """The series selectors of the dashboard's ``label_values`` variables, filled in."""
    d = json.loads((DOCS / "grafana" / "hapair.json").read_text())
    out = []
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), \w+\)", v["definition"])
            assert m, v["definition"]
            out.append(filled(m.group(1)))
    return out


def referenced(prefix: str) -> set[str]:
    return {m for e in dashboard_exprs() for m in METRIC.findall(e) if m.startswith(prefix)}


def agent_metric_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        for s in suffixes.get(family.type, [""]):
            names.add(family.name + s)
    return names


def test_every_expression_can_be_filled_in() -> None:
    exprs = [filled(e, node) for e in dashboard_exprs() for node in (".*", "lb1")]
    assert exprs and not [e for e in exprs if "$" in e]
    assert filled('x{node=~"$node"}[$__rate_interval]', "lb2") == 'x{node=~"lb2"}[20s]'
    assert variable_selectors() == ['hapair_peer_up{job="hapair-agent"}']


def test_grafana_dashboard_is_well_formed() -> None:
    d = json.loads((DOCS / "grafana" / "hapair.json").read_text())
    assert d["uid"] == "hapair" and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "agent_job", "haproxy_job", "node"} <= variables
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
    for e in dashboard_exprs():
        assert e.count("(") == e.count(")") and e.count("{") == e.count("}"), e
        assert re.search(r'job="\$(agent|haproxy)_job"', e), e


def test_grafana_dashboard_uses_only_the_agents_metrics() -> None:
    agent = referenced("hapair_") | referenced("process_")
    assert agent and agent <= agent_metric_names(), agent - agent_metric_names()
    assert referenced("haproxy_")  # checked against a live exporter in tests/lab


def test_prometheus_example_is_what_the_lab_runs() -> None:
    plan = make_plan(Spec())
    text = render_prometheus(plan, "/run/hapair/demo/secrets/stats.password")
    assert (DOCS / "prometheus.yml").read_text() == text
    jobs = set(re.findall(r"job_name: (\S+)", text))
    d = json.loads((DOCS / "grafana" / "hapair.json").read_text())
    consts = {v["query"] for v in d["templating"]["list"] if v["type"] == "constant"}
    assert jobs == consts == {"hapair-agent", "hapair-haproxy"}
    promtool = shutil.which("promtool")
    if promtool:  # Debian's prometheus package, installed by `make setup`
        proc = subprocess.run(
            [promtool, "check", "config", "--syntax-only", str(DOCS / "prometheus.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
