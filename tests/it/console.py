"""Browser test of the admin console: headless Chromium over WebDriver (selenium).

Usage: console.py BASE_URL OPERATOR_TOKEN OTHER_TOKEN ORG WEBHOOK_NAME SCREENSHOT_DIR
Exits non-zero with the reason when the console does not behave as users rely on.
"""
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, operator, other, org, name, shots = sys.argv[1:7]

options = webdriver.ChromeOptions()
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"]:
    options.add_argument(arg)
options.binary_location = "/usr/bin/chromium"
# The API's certificate is signed by a CA made for this test run.
options.accept_insecure_certs = True
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.implicitly_wait(5)


def at(path):
    """Waits for a navigation to end at `path` (a click returns before it does)."""
    try:
        WebDriverWait(driver, 10).until(lambda d: d.current_url.split("?")[0].endswith(path))
    except Exception:
        raise AssertionError(f"expected {path}, at {driver.current_url}")


def sign_in(token):
    driver.get(base + "/console/")
    at("/console/sign-in")
    field = driver.find_element(By.ID, "token")
    assert driver.find_element(By.CSS_SELECTOR, "label[for=token]").text == "API token"
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit].primary").click()


def sign_out():
    driver.find_element(By.CSS_SELECTOR, "form.signout button").click()
    at("/console/sign-in")


try:
    # A wrong token is refused on the page, and nothing is signed in.
    sign_in("fwa_not-a-token")
    assert "not valid" in driver.find_element(By.ID, "sign-in-error").text
    driver.save_screenshot(shots + "/sign-in.png")

    # The operator picks the org and sees its webhook in the inventory.
    sign_in(operator)
    at("/console/org")
    driver.find_element(By.ID, "org").send_keys(org)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit].primary").click()
    at("/console/orgs/" + org + "/webhooks")
    table = driver.find_element(By.ID, "inventory")
    cells = [c.text for c in table.find_elements(By.CSS_SELECTOR, "tbody td")]
    assert name in cells, cells
    assert "JWT" in cells and "Enabled" in cells, cells
    # The session cookie is not readable by scripts.
    cookie = driver.get_cookie("fw_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["secure"], cookie
    driver.save_screenshot(shots + "/inventory.png")
    # Campaigns: add one by id (enabled), then disable it.
    driver.find_element(By.LINK_TEXT, "Campaigns").click()
    at("/campaigns")
    assert "No campaign" in driver.find_element(By.CSS_SELECTOR, "p.empty").text
    driver.find_element(By.ID, "campaign").send_keys("cmp-1")
    driver.find_element(By.CSS_SELECTOR, "form[aria-label='Add a campaign'] button").click()
    rows = driver.find_elements(By.CSS_SELECTOR, "#campaigns tbody tr")
    assert len(rows) == 1 and "cmp-1" in rows[0].text and "Enabled" in rows[0].text, [r.text for r in rows]
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Disable webhooks for cmp-1']").click()
    WebDriverWait(driver, 10).until(
        lambda d: "Disabled" in d.find_element(By.CSS_SELECTOR, "#campaigns tbody tr").text
    )
    driver.save_screenshot(shots + "/campaigns.png")
    driver.get(base + "/console/orgs/" + org + "/webhooks")
    # Filters narrow the list.
    driver.find_element(By.ID, "name").send_keys("no such name")
    driver.find_element(By.CSS_SELECTOR, ".filters button").click()
    assert "matches these filters" in driver.find_element(By.CSS_SELECTOR, "p.empty").text
    sign_out()
    driver.get(base + "/console/orgs/" + org + "/webhooks")
    at("/console/sign-in")

    # A token of another org sees none of it.
    sign_in(other)
    at("/console/orgs/other/webhooks")
    driver.get(base + "/console/orgs/" + org + "/webhooks")
    assert not driver.find_elements(By.ID, "inventory"), "another org's webhooks were shown"
    assert name not in driver.page_source
    sign_out()
except Exception:
    print("at", driver.current_url)
    print(driver.page_source[:2000])
    raise
finally:
    driver.quit()
print("console browser test passed")
