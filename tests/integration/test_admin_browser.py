"""One end-to-end run of the admin in headless Chromium (Debian's chromium package)."""

from __future__ import annotations

import os
import shutil

import pytest
from django.contrib.auth.models import Permission, User

from tests.conftest import TARGET, authors, make_dump

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (tests/run.sh does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-sync", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def test_restore_from_the_dumps_page_and_watch_it_finish(
    celery_worker,
    browser,
    live_server,
    local_location,
    target,
    tmp_path,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    key = make_dump("from-the-browser", local_location)
    user = User.objects.create_user("operator", password="s3cret-pass", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_job", "restore_database"])
    )
    wait = WebDriverWait(browser, 60)

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("s3cret-pass")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(seen.presence_of_element_located((By.ID, "user-tools")))

    browser.get(f"{live_server.url}/admin/pgclone/job/")
    browser.find_element(By.CSS_SELECTOR, ".object-tools a[href$='/dumps/']").click()
    row = wait.until(seen.presence_of_element_located((By.XPATH, f"//tr[td/code='{key}']")))
    row.find_element(By.CSS_SELECTOR, "a.button").click()

    Select(wait.until(seen.presence_of_element_located((By.NAME, "database")))).select_by_value(
        "target"
    )
    browser.find_element(By.NAME, "confirm").send_keys(TARGET)
    browser.find_element(By.CSS_SELECTOR, "#pgclone-restore input[type=submit]").click()

    status = wait.until(seen.presence_of_element_located((By.ID, "pgclone-status")))
    try:
        wait.until(lambda _: status.text in ("succeeded", "failed"))  # updated in place
    finally:
        browser.save_screenshot(str(tmp_path / "job.png"))  # kept for a look when it fails
    assert status.text == "succeeded", browser.find_element(By.ID, "pgclone-error").text
    steps = browser.find_elements(By.CSS_SELECTOR, "#pgclone-steps td.status")
    assert [step.text for step in steps] == ["succeeded"] * 4
    assert authors(TARGET) == ["from-the-browser"]
