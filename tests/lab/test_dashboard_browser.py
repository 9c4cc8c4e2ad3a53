"""The dashboard in a real browser (Debian's headless Chromium driven by Selenium through the
system chromedriver), the forwarder that brings it to the host, and `status --watch`.

Set ``HAPAIR_SCREENSHOTS=docs/img`` to keep the before/after failover screenshots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.lab.conftest import HAPAIR, Lab

from hapair.agent.client import agent_request, agent_status
from hapair.bench.dashcost import CHROMIUM, HEADLESS
from hapair.platforms.lab import forward
from hapair.platforms.lab.paths import LabPaths

pytestmark = pytest.mark.lab

CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def fwd(lab: Lab) -> Iterator[dict[str, Any]]:
    """`hapair open` on the module's lab; its record (pid, ports)."""
    proc = lab.cli("open", "--name", lab.name, "all")
    assert proc.returncode == 0, proc.stderr
    rec = forward.running(lab.name)
    assert rec is not None
    rec["printed"] = proc.stdout
    yield rec
    forward.stop(lab.name)


@pytest.fixture(scope="module")
def browser(fwd: dict[str, Any]) -> Iterator[Any]:
    """Headless Chromium, a fresh profile, its page requests logged."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are missing: run `make setup`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hapair-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (*HEADLESS, f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def dashboard_url(fwd: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{fwd['ports']['dashboard']}/"


def text(driver: Any, selector: str) -> str | None:
    """The text of the first element matching ``selector``, read in one go (the page redraws)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        selector,
    )


def owners_shown(driver: Any) -> tuple[str | None, str | None]:
    return text(driver, "#vip-vip1 .owner"), text(driver, "#vip-vip2 .owner")


def agent(lab: Lab, lb: str) -> dict[str, Any]:
    return agent_status(str(LabPaths(lab.name).agent_sock(lb)))


def shot(driver: Any, name: str) -> None:
    where = os.environ.get("HAPAIR_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(where) / name))


def test_forwarder_serves_the_demo_page_on_loopback_only(lab: Lab, fwd: dict[str, Any]) -> None:
    ports = fwd["ports"]
    demo = f"http://127.0.0.1:{ports['demo']}/"
    assert demo in fwd["printed"] and dashboard_url(fwd) in fwd["printed"]
    lbs = set()
    for _ in range(4):
        req = urllib.request.Request(demo, headers={"Accept": "text/html"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = resp.read().decode()
            assert resp.status == 200 and "hapair demo page" in body
            lbs.add(resp.headers["x-lb"])
    assert lbs <= {"lb1", "lb2"} and lbs  # through a VIP, so through an LB
    # the stats page, behind its credentials, and HAProxy's exporter
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{ports['stats']}/metrics", timeout=5)
        pytest.fail("the exporter answered without credentials")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    # a second `open` finds the running forwarder
    again = lab.cli("open", "--name", lab.name, "demo")
    assert again.returncode == 0 and f"pid {fwd['pid']}" in again.stdout
    assert forward.running(lab.name)["pid"] == fwd["pid"]  # type: ignore[index]
    # nothing of it listens beyond loopback, in the host's namespace
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    mine = [line.split()[3] for line in out.splitlines() if f"pid={fwd['pid']}," in line]
    assert len(mine) == len(ports)
    assert all(addr.startswith("127.0.0.1:") for addr in mine), mine


def test_the_page_shows_both_lbs_and_both_vips(lab: Lab, browser: Any, fwd: dict[str, Any]) -> None:
    browser.get(dashboard_url(fwd))
    lab.wait_for("both VIPs on the page", lambda: owners_shown(browser) == ("lb1", "lb2"), 10)
    for lb in ("lb1", "lb2"):
        assert lb in (text(browser, f"#lb-{lb} h3") or "")
    assert text(browser, "#lb-lb2 dd.healthy") == "yes"
    assert text(browser, "#link") == "live"
    assert "web1" in (text(browser, "#backends tbody") or "")
    assert "lb1 starting" in (text(browser, "#events") or "")


def _button(browser: Any, node: str, action: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f"button[data-node={node}][data-action={action}]")


def _use_token(browser: Any, token: str) -> None:
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()


def test_buttons_do_nothing_without_the_token_and_work_with_it(
    lab: Lab, browser: Any, fwd: dict[str, Any]
) -> None:
    browser.get(dashboard_url(fwd))
    lab.wait_for("the page", lambda: owners_shown(browser) == ("lb1", "lb2"), 10)
    standby = _button(browser, "lb1", "standby")
    assert not standby.is_enabled()
    browser.execute_script("arguments[0].click()", standby)  # a disabled button does nothing
    status = browser.execute_async_script(
        "fetch('/standby', {method: 'POST'}).then(r => arguments[0](r.status))"
    )
    assert status == 401
    time.sleep(0.3)
    assert agent(lab, "lb1")["standby"] is False
    # a wrong token is refused, and forgotten
    _use_token(browser, "not-the-token")
    assert standby.is_enabled()
    standby.click()
    lab.wait_for("the refusal", lambda: "Refused" in (text(browser, "#action-result") or ""), 5)
    assert not standby.is_enabled()
    assert agent(lab, "lb1")["standby"] is False
    # the right one works: standby lb1 moves VIP1 to lb2, online brings it back
    token = LabPaths(lab.name).admin_token.read_text().strip()
    _use_token(browser, token)
    assert browser.execute_script("return sessionStorage.getItem('hapair.admin-token')") == token
    assert token not in browser.current_url
    standby.click()
    lab.wait_for("lb1 in standby", lambda: agent(lab, "lb1")["standby"] is True, 5)
    lab.wait_for("VIP1 on lb2 on the page", lambda: owners_shown(browser)[0] == "lb2", 10)
    # the page may now come from lb2's agent: it passes /node/lb1/online on to lb1's
    _button(browser, "lb1", "online").click()
    lab.wait_for("lb1 online", lambda: agent(lab, "lb1")["standby"] is False, 5)
    lab.wait_for(
        "VIP1 back on lb1 on the page", lambda: owners_shown(browser) == ("lb1", "lb2"), 20
    )


def test_a_failover_shows_within_two_seconds_without_a_reload(
    lab: Lab, browser: Any, fwd: dict[str, Any]
) -> None:
    traffic = None
    if os.environ.get("HAPAIR_SCREENSHOTS"):  # some client traffic to show: ~20 s, bounded
        urls = " ".join(f"http://{lab.vip(i)}/" for i in (1, 2))
        loop = f"for i in $(seq 200); do curl -s -o /dev/null -m 1 {urls}; sleep 0.05; done"
        traffic = subprocess.Popen(["ip", "netns", "exec", lab.ns("inet"), "sh", "-c", loop])
    browser.get(dashboard_url(fwd))
    lab.wait_for("the page", lambda: owners_shown(browser) == ("lb1", "lb2"), 10)
    time.sleep(1.5)  # a CPU reading, for the screenshot
    shot(browser, "dashboard-before.png")
    browser.execute_script("window.hapairNoReload = 42")
    t0 = time.monotonic()
    lab.platform.kill(lab.name, "lb1")
    lab.wait_for("VIP1 on lb2 on the page", lambda: owners_shown(browser)[0] == "lb2", 5)
    elapsed = time.monotonic() - t0
    print(f"VIP1 shown on lb2 {elapsed:.2f} s after `kill lb1` began")
    assert elapsed <= 2.0, f"the page showed the failover after {elapsed:.2f} s"
    assert browser.execute_script("return window.hapairNoReload") == 42
    lab.wait_for(
        "the failover in the history", lambda: "failover" in (text(browser, "#failovers") or ""), 3
    )
    time.sleep(1.5)
    shot(browser, "dashboard-after.png")
    if traffic is not None:
        traffic.kill()
        traffic.wait()
    lab.platform.revive(lab.name, "lb1")
    lab.wait_for("VIP1 back on lb1", lambda: owners_shown(browser) == ("lb1", "lb2"), 20)
    # lb1's own page after its restart: its earlier moves (kept on disk) and the failover lb2
    # made while it was down (from lb2)
    sock = str(LabPaths(lab.name).agent_sock("lb1"))

    def lb1_doc() -> dict[str, Any]:
        status, doc = agent_request(sock, "GET", "/dashboard.json")
        assert status == 200
        return doc  # type: ignore[no-any-return]

    lab.wait_for(
        "lb2's failover on lb1's page",
        lambda: any(f["node"] == "lb2" for f in lb1_doc()["failovers"]),
        5,
    )
    vip1 = next(v for v in lb1_doc()["vips"] if v["name"] == "vip1")
    assert [m["label"] for m in vip1["timeline"] if m["node"] == "lb1"][:1] == ["startup"]
    history = LabPaths(lab.name).node("lb1") / "history.jsonl"
    assert history.stat().st_mode & 0o777 == 0o600


def test_no_request_left_loopback(browser: Any, fwd: dict[str, Any]) -> None:
    origin = dashboard_url(fwd)
    urls = []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    assert any(u.endswith("/events") for u in urls) and any(u.endswith(".js") for u in urls)
    # chrome:// and data: are the browser's own pages, no network; everything else is the origin
    network = [u for u in urls if u.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")]
    assert network and [u for u in network if not u.startswith(origin)] == []
    assert not any("token" in u for u in urls)
    # and the browser's own sockets: loopback only (to the forwarder and chromedriver)
    out = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout
    peers = [line.split()[4] for line in out.splitlines() if "chrom" in line]
    assert peers and all(
        p.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")) for p in peers
    )


def test_status_watch_exits_0_on_ctrl_c(lab: Lab) -> None:
    proc = subprocess.Popen(
        [HAPAIR, "status", "--watch", "--name", lab.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "vip1" in out and "Load balancers" in out and "Traceback" not in err


def test_haproxy_exporter_has_what_grafana_asks_for(lab: Lab, fwd: dict[str, Any]) -> None:
    from tests.unit.test_grafana import referenced

    password = LabPaths(lab.name).stats_password.read_text().strip()
    mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    url = f"http://127.0.0.1:{fwd['ports']['stats']}/metrics"
    mgr.add_password(None, url, "admin", password)
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(mgr))
    with opener.open(url, timeout=10) as resp:
        names = {line.split("{")[0].split()[0] for line in resp.read().decode().splitlines()}
    wanted = referenced("haproxy_")
    assert wanted and wanted <= names, wanted - names


def prom_query(base: str, query: str) -> dict[str, Any]:
    """The answer of Prometheus's ``/api/v1/query`` to ``query``, an error's included (it comes
    with status 400 and a JSON body)."""
    url = f"{base}/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as exc:
        doc = json.loads(exc.read() or b"{}")
    return doc


def test_with_monitoring_prometheus_scrapes_both_lbs(lab: Lab) -> None:
    from tests.unit.test_grafana import dashboard_exprs, filled, variable_selectors

    up = lab.cli("up", "--name", lab.name, "--with-monitoring")
    assert up.returncode == 0, up.stdout + up.stderr
    opened = lab.cli("open", "--name", lab.name, "prometheus")
    assert opened.returncode == 0, opened.stderr
    rec = forward.running(lab.name)
    assert rec is not None and "prometheus" in rec["ports"]
    base = f"http://127.0.0.1:{rec['ports']['prometheus']}/api/v1"

    def healthy_targets() -> set[tuple[str, str]]:
        with urllib.request.urlopen(f"{base}/targets", timeout=5) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
        return {(t["labels"]["job"], t["labels"]["node"]) for t in targets if t["health"] == "up"}

    lab.wait_for("Prometheus scraping 4 targets", lambda: len(healthy_targets()) == 4, 30, step=0.5)
    result = prom_query(base, "sum(hapair_vip_held)")["data"]["result"]
    assert result and float(result[0]["value"][1]) == 2.0  # two VIPs, each held once
    # Every expression of the Grafana dashboard runs, for All LBs and for one.
    failed = {}
    for expr in dashboard_exprs():
        for node in (".*", "lb1"):
            answer = prom_query(base, filled(expr, node))
            if answer.get("status") != "success":
                failed[filled(expr, node)] = answer.get("error", answer)
    assert not failed, failed
    # ... the gauges have data for both LBs, and the LB picker finds both
    for expr in dashboard_exprs():
        if not re.search(r"\b(rate|increase|changes|histogram_quantile)\(", expr):
            series = prom_query(base, filled(expr))["data"]["result"]
            assert {s["metric"].get("node") for s in series} == {"lb1", "lb2"}, expr
    for selector in variable_selectors():
        series = prom_query(base, selector)["data"]["result"]
        assert {s["metric"]["node"] for s in series} == {"lb1", "lb2"}, selector
    # it listens inside the lab only
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    assert "prometheus" not in out
