"""The review page in a real headless Chromium (Debian's, driven by Playwright; no browser download): log in,
review ten items with the keyboard alone, edit one answer and find it in the built dataset; captured markup never
runs; a cookie POST without its CSRF token is refused; wrong keys are rate-limited. Screenshots are kept in
``test-artifacts/review/``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, Page
from starlette.routing import Route

from gateway.app import create_app
from gateway.config import load_config
from tests.browser import chromium
from tests.harness import ROOT, Served, served, write_config

ARTIFACTS = ROOT / "test-artifacts" / "review"
ADMIN = "admin-key-for-review-tests"
XSS = (
    '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1"> '
    '<a href="javascript:window.__pwned=1">click</a> {{ 7*7 }} {% raw %}'
)
CONFIG = """
server: {{state_dir: {state}}}
auth: {{admin_key_env: T_ADMIN}}
store: sqlite:///{db}
upstreams:
  dummy: {{provider: dummy, model: support-v1}}
routes:
  support-bot: {{variants: {{dummy: 1}}}}
review: {{sample: 1.0}}
datasets_dir: datasets
datasets:
  support: {{route: support-bot}}
"""
BEARER = {"authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("review")
    cfg = write_config(tmp, CONFIG.format(state=tmp / "state", db=tmp / "t.db"))
    with served(cfg, env={"T_ADMIN": ADMIN}) as gw:
        with httpx.Client(timeout=30) as client:
            for i in range(12):
                text = XSS if i == 5 else f"How do I reset password number {i}?"
                body = {"model": "support-bot", "messages": [{"role": "user", "content": text}]}
                assert client.post(gw.url + "/v1/chat/completions", json=body).status_code == 200
            deadline = time.monotonic() + 20
            while len(client.get(gw.url + "/admin/review/items?limit=100", headers=BEARER).json()["items"]) < 12:
                assert time.monotonic() < deadline, "items were not queued within 20 s"
                time.sleep(0.1)
        yield gw


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as b:
        yield b


def login(page: Page, url: str) -> None:
    page.goto(url + "/admin/review")
    page.wait_for_function("document.activeElement?.name === 'reviewer'")  # autofocus lands after load
    page.keyboard.type("ana")  # the name field has the focus
    page.keyboard.press("Tab")
    page.keyboard.type(ADMIN)
    page.keyboard.press("Enter")
    page.wait_for_selector("#counts")


def current(page: Page) -> str:
    return str(page.get_attribute("#item", "data-id"))


def press(page: Page, key: str) -> str:
    """Press ``key`` on the item page and wait for the next item; returns the new item's id."""
    with page.expect_navigation():
        page.keyboard.press(key)
    page.wait_for_selector("#counts")
    return current(page) if page.query_selector("#item") else ""


def items(gw: Served, status: str) -> list[dict]:  # type: ignore[type-arg]
    return httpx.get(gw.url + f"/admin/review/items?status={status}&limit=100", headers=BEARER).json()["items"]


def test_ten_items_by_keyboard_an_edit_and_the_dataset(gateway: Served, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, gateway.url)
    assert page.inner_text("#left") == "12"
    page.screenshot(path=str(ARTIFACTS / "item.png"), full_page=True)
    decided: dict[str, str] = {}
    edited_answer = "Open Settings, choose Security, then Reset password. The link is valid for 30 minutes."
    keys = ["a", "a", "r", "a", "4", "a", "e", "a", "a", "a"]
    for key in keys:
        item_id = current(page)
        if key == "e":
            page.keyboard.press("e")
            assert page.evaluate("document.activeElement.id") == "edit-answer"
            page.keyboard.type(edited_answer)  # the editor's text was selected: typing replaces it
            page.screenshot(path=str(ARTIFACTS / "editing.png"), full_page=True)
            before = item_id
            with page.expect_navigation():
                page.keyboard.press("Control+Enter")
            page.wait_for_selector("#counts")
            assert current(page) != before
        else:
            assert press(page, key) != item_id
        decided[item_id] = key
    assert page.inner_text("#left") == "2"
    page.keyboard.press("j")  # skip
    page.wait_for_url("**after=*")
    page.screenshot(path=str(ARTIFACTS / "after-ten.png"), full_page=True)
    assert not errors
    done = {i["id"]: i for i in items(gateway, "done")}
    assert set(done) == set(decided)
    expected = {"a": "approved", "r": "rejected", "4": "scored", "e": "approved"}
    assert {i: done[i]["decision"]["status"] for i in decided} == {i: expected[k] for i, k in decided.items()}
    assert all(d["decision"]["reviewer"] == "ana" for d in done.values())
    [scored] = [i for i, k in decided.items() if k == "4"]
    assert done[scored]["decision"]["score"] == 0.75
    [edited] = [i for i, k in decided.items() if k == "e"]
    assert done[edited]["decision"]["answer"] == edited_answer
    built = subprocess.run(
        [sys.executable, "-m", "gateway", "dataset", "build", "support", "-c", str(gateway.config)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "wrote v0001 (8 examples" in built.stdout
    train = (gateway.config.parent / "datasets" / "support" / "v0001" / "train.jsonl").read_bytes().splitlines()
    answers = [orjson.loads(line)["messages"][-1]["content"] for line in train]
    assert edited_answer in answers and len(answers) == 8
    page.close()


def test_captured_markup_is_shown_as_text_and_never_runs(gateway: Served, browser: Browser) -> None:
    page = browser.new_page()
    login(page, gateway.url)
    [xss] = [i for i in items(gateway, "pending") + items(gateway, "done") if "__pwned" in str(i["request"])]
    page.goto(gateway.url + f"/admin/review/item/{xss['id']}")
    page.wait_for_selector("#item")
    page.screenshot(path=str(ARTIFACTS / "xss.png"), full_page=True)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    shown = page.inner_text(".conversation .message pre")
    assert shown == XSS  # every character, as text (the template syntax was not evaluated either)
    assert page.query_selector(".conversation img") is None and page.query_selector(".conversation a") is None
    page.goto(gateway.url + "/admin/review/list?status=pending")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    page.close()


def test_session_cookie_and_csrf(gateway: Served, browser: Browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    login(page, gateway.url)
    [cookie] = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and ADMIN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""
    item_id = current(page)
    token = str(page.get_attribute("#approve-form input[name=csrf]", "value"))
    form: dict[str, str | float | bool] = {"action": "approve"}
    refused = page.request.post(gateway.url + f"/admin/review/item/{item_id}", form=form)
    assert refused.status == 403
    refused = page.request.post(gateway.url + f"/admin/review/items/{item_id}", data={"action": "approve"})
    assert refused.status == 403 and refused.json()["error"]["code"] == "csrf"
    wrong = page.request.post(gateway.url + f"/admin/review/item/{item_id}", form={**form, "csrf": token[:-2] + "xx"})
    assert wrong.status == 403
    assert items(gateway, "pending")[0]["id"] == item_id  # nothing was decided
    ok = page.request.post(
        gateway.url + f"/admin/review/items/{item_id}", data={"action": "score", "score": 0.5},
        headers={"x-csrf-token": token},
    )  # fmt: skip
    assert ok.status == 200 and ok.json()["item"]["decision"]["reviewer"] == "ana"
    context.close()
    anonymous = httpx.post(gateway.url + f"/admin/review/items/{item_id}", json={"action": "approve"})
    assert anonymous.status_code == 401


def test_json_api_with_the_admin_key(gateway: Served) -> None:
    url = gateway.url + "/admin/review/items"
    page = httpx.get(url, params={"status": "pending", "route": "support-bot", "limit": 1}, headers=BEARER).json()
    [item] = page["items"]
    assert set(item) >= {"id", "request_id", "route", "variant", "reason", "request", "response", "feedback", "shadow"}
    assert item["reason"] == "sample" and item["decision"] is None and page["next"]
    r = httpx.post(
        f"{url}/{item['id']}", json={"action": "edit", "answer": "Better.", "reviewer": "script"}, headers=BEARER
    )
    assert r.status_code == 200 and r.json()["item"]["decision"]["answer"] == "Better."
    bad = httpx.post(f"{url}/{item['id']}", json={"action": "score", "score": 7}, headers=BEARER)
    assert bad.status_code == 400 and "score" in bad.json()["error"]["message"]
    assert httpx.post(f"{url}/nope", json={"action": "approve"}, headers=BEARER).status_code == 404
    assert httpx.get(url, params={"since": "yesterday"}, headers=BEARER).status_code == 400
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401


def test_every_review_route_needs_a_session_or_the_admin_key(gateway: Served) -> None:
    app = create_app(load_config(gateway.config, environ={"T_ADMIN": ADMIN}))
    review_routes = [r for r in app.routes if isinstance(r, Route) and r.path.startswith("/admin/review")]
    item = items(gateway, "done")[0]
    for route in review_routes:
        path = route.path.replace("{item_id}", item["id"]).replace("{name}", "review.js")
        for method in sorted((route.methods or set()) - {"HEAD"}):
            for headers in ({}, {"authorization": "Bearer wrong"}):
                r = httpx.request(method, gateway.url + path, headers=headers, data={"action": "approve"})
                assert item["id"] not in r.text and "How do I reset" not in r.text, (method, path)
                if path.startswith("/admin/review/items"):
                    assert r.status_code == 401, (method, path)
                elif path.endswith("review.js"):
                    assert r.status_code == 200  # the page's script is not secret
                elif method == "GET":
                    assert 'name="key"' in r.text  # the login form
    after = httpx.get(gateway.url + f"/admin/review/items/{item['id']}", headers=BEARER).json()
    assert after["history"] == item["history"]  # nothing was decided


def test_wrong_keys_are_rate_limited(gateway: Served) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        codes = [
            client.post("/admin/review/login", data={"reviewer": "x", "key": f"guess{i}"}).status_code for i in range(7)
        ]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
        r = client.post("/admin/review/login", data={"reviewer": "x", "key": ADMIN})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0  # even the right key waits
