"""The dashboard's backend buttons (drain, ready, maint through HAProxy's runtime API) and its
calm, keyboard-usable live updates, in Debian's headless Chromium (see
``test_dashboard_browser``, whose forwarder and browser fixtures these tests share)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from tests.lab.conftest import Lab
from tests.lab.test_dashboard_browser import (  # noqa: F401  (fixtures)
    _use_token,
    browser,
    dashboard_url,
    fwd,
    owners_shown,
    text,
)

from hapair import haproxy_runtime as rt
from hapair.haproxy_stats import show_stat
from hapair.platforms.lab.paths import LabPaths

pytestmark = pytest.mark.lab


def haproxy_state(lab: Lab, lb: str, server: str) -> str:
    """The server's status as that LB's HAProxy reports it on its stats socket."""
    sock = str(LabPaths(lab.name).haproxy_sock(lb))
    return next(s.status for s in show_stat(sock) if s.server == server)


def shown_state(driver: Any, lb: str, server: str) -> str | None:
    return text(driver, f"#backends tr[data-lb={lb}][data-server={server}] td:nth-of-type(2)")


def server_button(driver: Any, lb: str, server: str, action: str) -> Any:
    from selenium.webdriver.common.by import By

    css = f"button[data-node={lb}][data-server={server}][data-action={action}]"
    return driver.find_element(By.CSS_SELECTOR, css)


@pytest.fixture
def page(lab: Lab, browser: Any, fwd: dict[str, Any]) -> Iterator[Any]:  # noqa: F811
    """The dashboard, both VIPs at home, no token; every server ready again afterwards."""
    browser.get(dashboard_url(fwd))
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    lab.wait_for("the page", lambda: owners_shown(browser) == ("lb1", "lb2"), 10)
    yield browser
    for lb in ("lb1", "lb2"):
        sock = str(LabPaths(lab.name).haproxy_sock(lb))
        for s in show_stat(sock):
            rt.call(sock, rt.set_state(s.backend, s.server, "ready"))


def test_backend_buttons_need_the_token_and_drain_a_server(lab: Lab, page: Any) -> None:
    drain = server_button(page, "lb1", "web1", "drain")
    assert not drain.is_enabled()
    page.execute_script("arguments[0].click()", drain)  # a disabled button does nothing
    status = page.execute_async_script(
        "fetch('/node/lb1/server/web1/drain', {method: 'POST'}).then(r => arguments[0](r.status))"
    )
    assert status == 401
    assert (text(page, "#action-result") or "") == ""
    assert haproxy_state(lab, "lb1", "web1").startswith("UP")
    token = LabPaths(lab.name).admin_token.read_text().strip()
    _use_token(page, token)
    lab.wait_for("the button enabled", drain.is_enabled, 2)
    drain.click()
    lab.wait_for("web1 draining on lb1", lambda: haproxy_state(lab, "lb1", "web1") == "DRAIN", 5)
    lab.wait_for("DRAIN on the page", lambda: shown_state(page, "lb1", "web1") == "DRAIN", 5)
    assert "web1 on lb1: drain" in (text(page, "#action-result") or "")
    assert haproxy_state(lab, "lb2", "web1").startswith("UP")  # only lb1's HAProxy
    # lb2's server, through whichever agent serves the page (the other one passes it on)
    server_button(page, "lb2", "web2", "maint").click()
    lab.wait_for("web2 in maint on lb2", lambda: haproxy_state(lab, "lb2", "web2") == "MAINT", 5)
    lab.wait_for("MAINT on the page", lambda: shown_state(page, "lb2", "web2") == "MAINT", 5)
    server_button(page, "lb1", "web1", "ready").click()
    lab.wait_for("web1 ready on lb1", lambda: haproxy_state(lab, "lb1", "web1") == "UP", 5)
    lab.wait_for("UP on the page", lambda: shown_state(page, "lb1", "web1") == "UP", 5)


INSTALL_COUNTERS = """
window.hapairSeen = {summary: 0, updated: 0};
new MutationObserver(() => { window.hapairSeen.summary += 1; }).observe(
  document.getElementById('summary'), {childList: true, characterData: true, subtree: true});
new MutationObserver(() => { window.hapairSeen.updated += 1; }).observe(
  document.getElementById('updated'), {childList: true, characterData: true, subtree: true});
"""


def seen(driver: Any) -> dict[str, int]:
    return driver.execute_script("return window.hapairSeen")  # type: ignore[no-any-return]


def test_updates_touch_only_what_changed(lab: Lab, page: Any) -> None:
    summary = text(page, "#summary")
    assert summary == "vip1 on lb1, vip2 on lb2"
    _use_token(page, LabPaths(lab.name).admin_token.read_text().strip())  # enabled: focusable
    page.execute_script(INSTALL_COUNTERS)
    # a focused button and a text selection on the page, then a few frames
    drain = server_button(page, "lb1", "web2", "drain")
    page.execute_script(
        "arguments[0].hapairMark = 1; arguments[0].focus(); const r = document.createRange();"
        "r.selectNodeContents(document.getElementById('summary'));"
        "getSelection().removeAllRanges(); getSelection().addRange(r);",
        drain,
    )
    assert page.execute_script("return document.activeElement.hapairMark") == 1
    lab.wait_for("three new frames", lambda: seen(page)["updated"] >= 3, 5)
    assert seen(page)["summary"] == 0  # the live region: nothing to say, nothing said
    assert page.execute_script("return document.activeElement.hapairMark") == 1
    assert page.execute_script("return getSelection().toString()") == summary


def test_pause_by_keyboard_stops_updates(lab: Lab, page: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    def focused() -> str:
        return page.execute_script("return document.activeElement.id")  # type: ignore[no-any-return]

    for _ in range(10):  # Tab from the top of the page to the first control
        if focused() == "pause":
            break
        ActionChains(page).send_keys(Keys.TAB).perform()
    assert focused() == "pause"
    ActionChains(page).send_keys(Keys.SPACE).perform()
    pause = page.find_element("id", "pause")
    assert pause.get_attribute("aria-pressed") == "true" and pause.text == "Resume updates"
    frozen = text(page, "#updated")
    page.execute_script(INSTALL_COUNTERS)

    def held() -> int:
        found = re.search(r"(\d+) updates? held back", text(page, "#pause-state") or "")
        return int(found.group(1)) if found else 0

    lab.wait_for("three frames held back", lambda: held() >= 3, 5)
    assert text(page, "#updated") == frozen and seen(page)["updated"] == 0
    ActionChains(page).send_keys(Keys.ENTER).perform()  # still focused: Enter resumes
    assert pause.get_attribute("aria-pressed") == "false" and pause.text == "Pause updates"
    lab.wait_for("updates again", lambda: text(page, "#updated") != frozen, 3)
    assert text(page, "#pause-state") == ""
