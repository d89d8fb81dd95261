"""The status page at `GET /`, in a real headless browser (Debian's chromium, driven by
Playwright): a two-node swarm of real daemons on a real redis-server, every node shown, and a file
changed on one node shown as converged on both, by the page refreshing itself."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from daemon_harness import DaemonGroup, wait_until
from playwright.sync_api import Browser, Page, sync_playwright
from test_http import get, with_http

from swarm.devtools.devredis import RedisServer

pytestmark = pytest.mark.slow

UPDATE_MS = 20_000  # the page polls every 2 s; a change reaches every disk well within this


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium is not None, "chromium is missing: scripts/setup.sh installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


def row(page: Page, table: str, key: str, value: str, converged: bool | None = None) -> str:
    selector = f'#{table} [data-{key}="{value}"]'
    if converged is not None:
        selector += f'[data-converged="{str(converged).lower()}"]'
    page.wait_for_selector(selector, timeout=UPDATE_MS)
    return page.inner_text(selector)


def test_the_page_shows_every_node_and_a_change_converging_live(
    redis_server: RedisServer, tmp_path: Path, browser: Browser
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a, _a_port = with_http(group, "a")
        b, b_port = with_http(group, "b")
        for daemon in (a.start(), b.start()):
            daemon.wait_ready()
        page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
        hosts: set[str] = set()
        page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
        page.goto(f"http://127.0.0.1:{b_port}/")
        for node in ("a", "b"):
            assert "yes" in row(page, "nodes", "node", node)  # online
        page.evaluate("window.loadedOnce = true")  # gone if the page reloads

        (a.dir / "MEMORY.md").write_text("# memory\n- decided: metric units\n")
        file_row = row(page, "files", "file", "MEMORY.md", converged=True)
        assert "by a" in file_row, file_row  # the last change, and which node made it
        for node in ("a", "b"):
            row(page, "nodes", "node", node, converged=True)
        assert page.get_attribute("#verdict", "data-converged") == "true"
        merge = row(page, "merges", "path", "MEMORY.md")
        assert "created MEMORY.md with 2 lines from a" in merge
        assert page.evaluate("window.loadedOnce") is True, "the page reloaded"
        assert hosts == {f"127.0.0.1:{b_port}"}, f"assets from elsewhere: {hosts}"
        page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
        page.close()

        # the page's data is what `swarm status --json` says, with the merges of this node
        code, body = get(b_port, "/api/swarm")
        data = json.loads(body)
        assert code == 200 and data["node"] == "b" and data["view"]["converged"] is True
        wait_until(lambda: (b.dir / "MEMORY.md").exists(), "rendered on b")
