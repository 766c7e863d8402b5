"""Browser test of the admin console: headless Chromium over WebDriver (selenium).

Usage: console.py SCENARIO BASE_URL SCREENSHOT_DIR [ARG=VALUE ...]

Each scenario is one step of `console.rs`, which prepares the broker, the processor and
the receivers between steps. Exits non-zero with the reason when the console does not
behave as users rely on.
"""
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

scenario, base, shots = sys.argv[1:4]
args = dict(a.split("=", 1) for a in sys.argv[4:])

options = webdriver.ChromeOptions()
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"]:
    options.add_argument(arg)
options.binary_location = "/usr/bin/chromium"
# The API's certificate is signed by a CA made for this test run.
options.accept_insecure_certs = True
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.implicitly_wait(5)


def find(css):
    return driver.find_element(By.CSS_SELECTOR, css)


def finds(css):
    return driver.find_elements(By.CSS_SELECTOR, css)


def at(path, patience=10):
    """Waits for a navigation to end at `path` (a click returns before it does)."""
    try:
        WebDriverWait(driver, patience).until(lambda d: d.current_url.split("?")[0].endswith(path))
    except Exception:
        raise AssertionError(f"expected {path}, at {driver.current_url}")


def until(check, what, patience=30):
    """Waits for `check` to hold; a page reloading meanwhile is only a reason to look again."""
    def holds(_):
        try:
            return check()
        except (WebDriverException, IndexError, KeyError):
            return False
    try:
        WebDriverWait(driver, patience, poll_frequency=0.25).until(holds)
    except Exception:
        raise AssertionError(f"{what}: not seen at {driver.current_url}")


def shot(name, width=1280):
    """A screenshot of the whole page at `width`."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(600, min(height + 40, 4000)))
    driver.save_screenshot(f"{shots}/{name}.png")
    driver.set_window_size(1280, 900)


def sign_in(token):
    driver.get(base + "/console/")
    at("/console/sign-in")
    assert find("label[for=token]").text == "API token"
    find("#token").send_keys(token)
    find("button[type=submit].primary").click()
    # The answer is a page of its own (the org, or the form again with the reason).
    until(lambda: "/console/sign-in" not in driver.current_url or finds("#sign-in-error"), "signed in")


def sign_out():
    find("form.signout button").click()
    at("/console/sign-in")


def inventory(org, sandbox=None):
    driver.get(f"{base}/console/orgs/{org}/webhooks" + (f"?sandbox={sandbox}" if sandbox else ""))


def cells():
    return [c.text for c in finds("#inventory tbody td")]


def field_error(name):
    """The refusal shown next to a field, tied to it for assistive technology."""
    error = find(f"#{name}-error")
    return error.text


def basics():
    org, name = args["org"], args["name"]
    # A wrong token is refused on the page, and nothing is signed in.
    sign_in("fwa_not-a-token")
    assert "not valid" in find("#sign-in-error").text
    shot("sign-in")

    # The operator picks the org and sees its webhook in the inventory.
    sign_in(args["operator"])
    at("/console/org")
    shot("org")
    find("#org").send_keys(org)
    find("button[type=submit].primary").click()
    at(f"/console/orgs/{org}/webhooks")
    row = cells()
    assert name in row and "JWT" in row and "Enabled" in row, row
    # No sandbox chosen: creating waits for one, and says why.
    create = find(".create button")
    assert not create.is_enabled() and "Choose a sandbox" in find("#create-why").text
    # The session cookie is not readable by scripts.
    cookie = driver.get_cookie("fw_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["secure"], cookie
    assert "fw_session" not in driver.execute_script("return document.cookie")
    # Its sandbox already has a webhook: one per org + sandbox, so Create is disabled.
    find("#sandbox").send_keys(args["sandbox"])
    find("form[aria-label=Sandbox] button").click()
    until(lambda: "already has" in find("#create-why").text, "Create disabled with the reason")
    assert not find(".create button").is_enabled()
    shot("inventory")

    # Campaigns: add one by id (enabled), then disable it.
    find(".create a[href$='/campaigns']").click()
    at("/campaigns")
    find("#campaign").send_keys("cmp-1")
    find("form[aria-label='Add a campaign'] button").click()
    until(lambda: any("cmp-1" in r.text for r in finds("#campaigns tbody tr")), "cmp-1 added")
    row = [r for r in finds("#campaigns tbody tr") if "cmp-1" in r.text][0]
    assert "Enabled" in row.text, row.text
    find("button[aria-label='Disable webhooks for cmp-1']").click()
    until(
        lambda: "Disabled" in [r for r in finds("#campaigns tbody tr") if "cmp-1" in r.text][0].text,
        "cmp-1 disabled",
    )
    shot("campaigns")

    # Filters narrow the list.
    inventory(org)
    find("#name").send_keys("no such name")
    find("form[aria-label='Filter webhooks'] button").click()
    until(lambda: "matches" in find("p.empty").text, "an empty filtered inventory")
    # On a phone: one column, nothing cut off sideways but the table's own scroller.
    inventory(org)
    driver.set_window_size(390, 844)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    wide = driver.execute_script(
        "const w = document.documentElement.clientWidth;"
        "return [...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > w + 1 && !e.closest('.table-wrap'))"
        ".slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone: {wide}"
    shot("inventory-phone", width=390)
    driver.set_window_size(1280, 900)
    # Keyboard: the first Tab reaches a visible control with a focus ring.
    find("body").send_keys("\ue004")
    focused = driver.switch_to.active_element
    assert focused.tag_name in ("a", "button", "input"), focused.tag_name
    outline = focused.value_of_css_property("outline-style")
    assert outline not in ("none", ""), outline
    sign_out()
    inventory(org)
    at("/console/sign-in")

    # A token of another org sees none of it: not the inventory, the webhook or its log.
    sign_in(args["other"])
    at("/console/orgs/other/webhooks")
    for path in ["webhooks", f"sandboxes/{args['sandbox']}/webhook",
                 f"sandboxes/{args['sandbox']}/webhook/deliveries",
                 f"sandboxes/{args['sandbox']}/campaigns"]:
        driver.get(f"{base}/console/orgs/{org}/{path}")
        assert not finds("#inventory") and not finds("#facts") and not finds("#outcomes"), path
        assert name not in driver.page_source and "cmp-1" not in driver.page_source, path
    sign_out()


def delete():
    org, sandbox = args["org"], args["sandbox"]
    sign_in(args["operator"])
    inventory(org, sandbox)
    find(f"#inventory a[href$='/sandboxes/{sandbox}/webhook']").click()
    at("/webhook")
    find("#delete").click()
    at("/webhook/delete")
    assert args["name"] in find("main").text
    shot("delete")
    find("#confirm-delete").click()
    at(f"/console/orgs/{org}/webhooks")
    assert not finds("#inventory"), "the webhook is still listed"
    # The sandbox is free again: Create is offered.
    assert find("#create").is_enabled()


def create():
    org, sandbox = args["org"], args["sandbox"]
    sign_in(args["operator"])
    inventory(org, sandbox)
    find("#create").click()
    at("/webhook/new")
    find("#name").send_keys("Console feedback")
    find("#sandbox_name").send_keys("prod")
    # Email only.
    sms = find("input[name=channel][value=sms]")
    if sms.is_selected():
        sms.click()
    # An http:// URL and a reserved header are refused next to their fields.
    find("#url").send_keys("http://" + args["url"].split("://", 1)[1])
    find("input[name=header_name]").send_keys("Host")
    find("input[name=header_value]").send_keys("elsewhere")
    find("#add-header").click()
    until(lambda: len(finds("input[name=header_name]")) == 2, "a second header row")
    finds("input[name=header_name]")[1].send_keys("X-Partner-Id")
    finds("input[name=header_value]")[1].send_keys("acme")
    find("#generate-secret").click()
    until(lambda: find("#secret_new").get_attribute("value").startswith("whsec_"), "a generated secret")
    find("#submit").click()
    until(lambda: finds("#url-error"), "the URL refused")
    assert "https" in field_error("url"), field_error("url")
    assert find("#url").get_attribute("aria-invalid") == "true"
    assert "reserved" in field_error("header_0"), field_error("header_0")
    assert "https" not in field_error("header_0")
    # What was typed is still there.
    assert finds("input[name=header_name]")[1].get_attribute("value") == "X-Partner-Id"
    shot("edit-errors")
    # Correct both: the real URL, and the reserved header's row removed.
    find("#url").clear()
    find("#url").send_keys(args["url"])
    find("button[value=remove-header-0]").click()
    until(lambda: len(finds("input[name=header_name]")) == 1, "the Host row removed")
    find("#submit").click()
    at(f"/sandboxes/{sandbox}/webhook")
    assert find("#url").text == args["url"]
    facts = find("#facts").text
    assert "X-Partner-Id: acme" in facts and "Console feedback" in driver.page_source, facts
    # The signing secret shows as set, by its fingerprint only.
    assert "whsec_" not in driver.page_source
    inventory(org, sandbox)
    assert "Console feedback" in cells()
    assert not find(".create button").is_enabled()


def edit():
    """Edits the URL; and an edit made meanwhile in another tab is reported, not lost."""
    org, sandbox = args["org"], args["sandbox"]
    sign_in(args["operator"])
    # Edit straight from the inventory.
    inventory(org, sandbox)
    find("#inventory a[href$='/webhook/edit']").click()
    at("/webhook/edit")
    # The form of the stored webhook: the signing secret kept by its fingerprint.
    assert finds("#secrets code"), "the signing secret is not shown as set"
    find("#url").clear()
    find("#url").send_keys(args["url"])
    find("#submit").click()
    at("/webhook")
    assert find("#url").text == args["url"]
    shot("webhook")

    # Two tabs open the form; the second saves first; the first is told, and can reload.
    edit_url = f"{base}/console/orgs/{org}/sandboxes/{sandbox}/webhook/edit"
    first = driver.current_window_handle
    driver.get(edit_url)
    driver.switch_to.new_window("tab")
    driver.get(edit_url)
    find("#name").clear()
    find("#name").send_keys("Renamed in another tab")
    # ...and turns on JWT authentication: the key is given once, then only shown as set.
    find("input[name=auth][value=jwt]").click()
    find("#jwt_key").send_keys(args["jwt_key"])
    for field, value in [("issuer", "ajo"), ("subject", "feedback"), ("audience", "acme")]:
        find(f"#jwt_{field}").send_keys(value)
    find("#submit").click()
    at("/webhook")
    assert args["jwt_key"] not in driver.page_source
    driver.switch_to.window(first)
    find("#name").clear()
    find("#name").send_keys("Stale name")
    find("#submit").click()
    until(lambda: finds("#banner"), "the conflict reported")
    banner = find("#banner").text
    assert "changed this webhook" in banner and "operator" in banner, banner
    # The stale edit is still on the page, not saved.
    assert find("#name").get_attribute("value") == "Stale name"
    shot("edit-conflict")
    find("#reload").click()
    at("/webhook/edit")
    assert find("#name").get_attribute("value") == "Renamed in another tab"
    assert "fingerprint" in find("#jwt-key-set").text
    assert find("#jwt_key").get_attribute("value") == ""
    assert args["jwt_key"] not in driver.page_source


def log():
    """The delivery log shows delivered and failed events; Redeliver ends delivered."""
    org, sandbox, failed, window_failed = args["org"], args["sandbox"], args["failed"], args["window_failed"]
    sign_in(args["operator"])
    log_url = f"{base}/console/orgs/{org}/sandboxes/{sandbox}/webhook/deliveries"

    def statuses():
        driver.get(log_url)
        return {o.get_attribute("data-event"): o.find_element(By.CSS_SELECTOR, ".badge").text
                for o in finds("#outcomes li.outcome")}

    # The log follows the outcome topic: the newest outcomes may take a moment.
    until(lambda: statuses().get(window_failed) == "failed", "the failed outcomes in the log")
    statuses = statuses()
    assert "delivered" in statuses.values() and statuses.get(failed) == "failed", statuses
    # A row opens to its attempts.
    row = find(f"li.outcome[data-event='{failed}']")
    row.find_element(By.TAG_NAME, "summary").click()
    attempts = row.find_element(By.CSS_SELECTOR, ".attempts table").text
    assert "400" in attempts, attempts
    shot("delivery-log")
    # Filters.
    Select(find("#status")).select_by_visible_text("failed")
    find("form[aria-label='Filter outcomes'] button").click()
    until(lambda: all(b.text == "failed" for b in finds("#outcomes .badge")), "only failed outcomes")
    # Redeliver the failed one: its page waits for the new outcome, then shows it.
    find(f"li.outcome[data-event='{failed}'] form.redeliver button").click()
    at(f"/deliveries/{failed}")
    replay = driver.current_url.split("replay=")[1]
    assert replay in find("#replay-state").text
    until(lambda: find("#outcome-status").text == "delivered", "the redelivered outcome", patience=60)
    assert find("#outcome-replay").text == replay
    shot("event")
    # "Redeliver failed since…" a window: its progress, then done with what it queued.
    driver.get(f"{base}/console/orgs/{org}/sandboxes/{sandbox}/webhook/deliveries")
    since = find("#window-from")
    driver.execute_script("arguments[0].value = arguments[1]", since, args["since"])
    find("#redeliver-window").click()
    until(lambda: "/webhook/redeliver/" in driver.current_url, "the progress page")
    until(lambda: find("#run-state").text.startswith("Done"), "the window done", patience=60)
    assert find("#run-queued").text == "1", find("#run-queued").text
    shot("redeliver-progress")
    # Its new outcome shows in the log.
    driver.get(f"{base}/console/orgs/{org}/sandboxes/{sandbox}/webhook/deliveries/{window_failed}")
    until(lambda: find("#outcome-status").text == "delivered", "the window's event delivered", patience=60)
    print("window-replay", find("#outcome-replay").text)


def send_test():
    org, sandbox = args["org"], args["sandbox"]
    sign_in(args["operator"])
    # The receiver fails: the inventory's health badge says so, with the last error.
    inventory(org)
    badge = find("#inventory .badge.health")
    assert badge.text == "Failing", badge.text
    assert "HTTP 503" in badge.get_attribute("title"), badge.get_attribute("title")
    shot("inventory-health")
    # The org's operational events list the webhook failing.
    find("#events-link").click()
    until(lambda: finds("#events tr[data-type='webhook.failing']"), "webhook.failing listed")
    row = find("#events tr[data-type='webhook.failing']").text
    assert "failing since" in row and "last error: HTTP 400" in row, row
    shot("operational-events")
    # The webhook's page: a banner says since when, how many requests failed, and why.
    driver.get(f"{base}/console/orgs/{org}/sandboxes/{sandbox}/webhook")
    assert find("#health-badge").text == "Failing", find("#health-badge").text
    banner = find("#failing-banner").text
    assert "Failing since" in banner and "requests failed" in banner, banner
    assert "HTTP 503" in find("#last-error").text, find("#last-error").text
    shot("failing-banner")
    find("#send-test").click()
    until(lambda: finds("#test-result"), "the test result")
    result = find("#test-result").text
    assert "failed" in result and "HTTP 503" in find("#test-status").text and " ms" in result, result
    shot("send-test")
    # Disable: a banner says since when and by whom, and offers to re-enable and redeliver.
    find("#toggle").click()
    until(lambda: find("#toggle").text == "Enable" and find(".heading .badge").text == "Disabled", "disabled")
    banner = find("#down-banner").text
    assert "Since " in banner and "by operator" in banner and "skipped" in banner, banner
    assert "HTTP 503" in find("#last-error").text, banner
    assert not finds("#failing-banner"), "a failing banner on a disabled webhook"
    shot("disabled-banner")
    # Re-enable and redeliver: the redelivery's progress, then the webhook enabled again.
    find("#reenable").click()
    until(lambda: "/webhook/redeliver/" in driver.current_url, "the redelivery's progress")
    until(lambda: find("#run-state").text.startswith("Done"), "the redelivery done", patience=60)
    driver.get(f"{base}/console/orgs/{org}/sandboxes/{sandbox}/webhook")
    until(lambda: find("#toggle").text == "Disable" and find(".heading .badge").text == "Enabled", "enabled again")
    assert not finds("#down-banner"), "the banner of a disabled webhook on an enabled one"
    # Disable and enable with the toggle alone.
    find("#toggle").click()
    until(lambda: find("#toggle").text == "Enable", "disabled")
    find("#toggle").click()
    until(lambda: find("#toggle").text == "Disable" and find(".heading .badge").text == "Enabled", "enabled")


def policy():
    """A filter built from rows and a delivery policy: refused values beside their fields."""
    org, sandbox = args["org"], args["sandbox"]
    sign_in(args["operator"])
    driver.get(f"{base}/console/orgs/{org}/sandboxes/{sandbox}/webhook/edit")
    at("/webhook/edit")
    def condition(i, field, op, value, negate=False):
        Select(finds("select[name=filter_field]")[i]).select_by_visible_text(field)
        Select(finds("select[name=filter_op]")[i]).select_by_visible_text(op)
        Select(finds("select[name=filter_negate]")[i]).select_by_visible_text("is not" if negate else "is")
        box = finds("input[name=filter_value]")[i]
        box.clear()
        box.send_keys(value)
    condition(0, "messageDeliveryFeedback.messageFailure.type", "equals", "Hard")
    find("#add-filter-row").click()
    until(lambda: len(finds("select[name=filter_field]")) == 2, "a second condition row")
    # The first row survives adding another.
    assert finds("input[name=filter_value]")[0].get_attribute("value") == "Hard"
    condition(1, "retryCount", "gt", "many", negate=True)
    find("#timeout_ms").send_keys("60000")
    find("#retry_waits").send_keys("1, 5, 30")
    find("#rate_per_second").send_keys("50")
    find("#rate_burst").send_keys("lots")
    find("#submit").click()
    until(lambda: finds("#form-errors"), "the refusals")
    assert "number" in field_error("filter_1"), field_error("filter_1")
    assert "whole number" in field_error("rate_burst"), field_error("rate_burst")
    # Fixed by the form itself first; the API's bounds come next.
    condition(1, "retryCount", "gt", "0", negate=True)
    find("#rate_burst").clear()
    find("#rate_burst").send_keys("5")
    find("#submit").click()
    until(lambda: finds("#timeout_ms-error"), "the timeout refused")
    error = field_error("timeout_ms")
    assert "1000" in error and "30000" in error, error
    assert "1000–30000 ms" in find("#timeout_ms-bounds").text
    assert find("#timeout_ms").get_attribute("aria-invalid") == "true"
    shot("policy-errors")
    find("#timeout_ms").clear()
    find("#timeout_ms").send_keys("5000")
    find("#submit").click()
    at("/webhook")
    assert "Hard" in find("#filter").text, find("#filter").text
    policy = find("#policy").text
    assert "timeout 5000 ms" in policy and "1, 5, 30" in policy, policy
    assert "50 a second, burst 5" in find("#rate").text, find("#rate").text


scenarios = {"policy": policy, "basics": basics, "delete": delete, "create": create, "edit": edit, "log": log,
             "send-test": send_test}
try:
    scenarios[scenario]()
except Exception:
    print("at", driver.current_url)
    print(driver.page_source[:3000])
    raise
finally:
    driver.quit()
print(f"console scenario {scenario} passed")
