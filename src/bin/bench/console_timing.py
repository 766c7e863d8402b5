"""Times console pages in headless Chromium by the browser's own Navigation and Paint Timing.

Usage: console_timing.py BASE_URL TOKEN ORG
Prints, for each page: the HTML's size, the stylesheet's, the server's time to the first
byte, and the time to first contentful paint (from the start of the navigation), p50 and p95
of 20 loads (the stylesheet cached after the first, as a browser would).
"""
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, token, org = sys.argv[1:4]
LOADS = 20

options = webdriver.ChromeOptions()
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"]:
    options.add_argument(arg)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def p(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timing():
    return driver.execute_script("""
        const nav = performance.getEntriesByType('navigation')[0];
        const paint = performance.getEntriesByType('paint')
            .find(e => e.name === 'first-contentful-paint');
        const css = performance.getEntriesByType('resource').find(e => e.name.endsWith('.css'));
        return { html: nav.decodedBodySize, ttfb: nav.responseStart - nav.requestStart,
                 fcp: paint ? paint.startTime : null, css: css ? css.decodedBodySize : null,
                 rows: document.querySelectorAll('#inventory tbody tr').length };
    """)


def measure(label, path):
    samples = []
    for _ in range(LOADS):
        driver.get(base + path)
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return performance.getEntriesByType('paint').length > 0"))
        samples.append(timing())
    first = samples[0]
    fcp = [s["fcp"] for s in samples if s["fcp"] is not None]
    ttfb = [s["ttfb"] for s in samples]
    print(f"  {label:<44} rows {first['rows']:>4}  HTML {first['html'] / 1024:6.1f} KiB"
          f"  CSS {(first['css'] or 0) / 1024:4.1f} KiB"
          f"  server p50 {p(ttfb, .5):6.1f} ms p95 {p(ttfb, .95):6.1f} ms"
          f"  first paint p50 {p(fcp, .5):6.1f} ms p95 {p(fcp, .95):6.1f} ms")


try:
    driver.get(base + "/console/sign-in")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit].primary").click()
    WebDriverWait(driver, 10).until(lambda d: "/console/org" in d.current_url)
    measure("inventory, first page (100 of 1,000)", f"/console/orgs/{org}/webhooks")
    measure("inventory, last page", f"/console/orgs/{org}/webhooks?page=10")
    measure("inventory, filtered by name (1 row)", f"/console/orgs/{org}/webhooks?name=feedback%20999")
    measure("inventory, one sandbox chosen", f"/console/orgs/{org}/webhooks?sandbox=sb-0500")
    measure("delivery log of one webhook (10 outcomes)",
            f"/console/orgs/{org}/sandboxes/sb-0500/webhook/deliveries")
    driver.get(base + f"/console/orgs/{org}/webhooks")
    print("  " + driver.find_element(By.ID, "count").text)
finally:
    driver.quit()
