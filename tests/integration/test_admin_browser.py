"""One end-to-end run of the admin in headless Chromium (Debian's chromium package)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.urls import reverse

from pgclone.models import Job
from pgclone.pg import databases
from tests.helpers import ROOT, TARGET, authors, make_dump, pgclone_databases

pytestmark = pytest.mark.django_db(transaction=True)

# Screenshots of the job page, kept for people to look at (not removed: that is their point).
ARTIFACTS = ROOT / ".artifacts" / "admin"


def waiting(browser, seconds: float):
    """A wait that looks again when the page was replaced under it (a reload, a redirect)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(browser, seconds, ignored_exceptions=ignored)


def log_in(browser, live_server, wait, username: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys("s3cret-pass")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(seen.presence_of_element_located((By.ID, "user-tools")))


def operator(name: str = "operator") -> User:
    user = User.objects.create_user(name, password="s3cret-pass", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_job", "restore_database"])
    )
    return user


def start_restore(
    browser, live_server, wait, key: str, database: str, name: str, *, reversible: bool = False
) -> None:
    """From the dumps page, as a person does: pick the dump, the database, type its name."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    browser.get(f"{live_server.url}/admin/pgclone/job/")
    dumps = reverse("admin:pgclone_dumps")
    browser.find_element(By.CSS_SELECTOR, f".object-tools a[href='{dumps}']").click()
    row = wait.until(seen.presence_of_element_located((By.XPATH, f"//tr[td/code='{key}']")))
    row.find_element(By.CSS_SELECTOR, "a.button").click()
    confirm_restore(browser, wait, database, name, reversible=reversible)


def confirm_restore(
    browser, wait, database: str, name: str, *, reversible: bool | None = None
) -> None:
    """The restore form: the database, the warning read, Reversible ticked or not
    (None: as the form has it), its name typed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.select import Select

    Select(wait.until(seen.presence_of_element_located((By.NAME, "database")))).select_by_value(
        database
    )
    warning = browser.find_element(By.ID, "pgclone-restore-users").text
    assert "Users and sessions come from the dump" in warning
    box = browser.find_element(By.NAME, "reversible")
    if reversible is not None and box.is_selected() != reversible:
        box.click()
    browser.find_element(By.NAME, "confirm").send_keys(name)
    browser.find_element(By.CSS_SELECTOR, "#pgclone-restore input[type=submit]").click()


def wait_for_the_end(browser, wait, outcome: str) -> None:
    """The page shows the job as it ended (heading included) without anyone reloading."""
    from selenium.webdriver.common.by import By

    wait.until(lambda _: f"({outcome})" in browser.find_element(By.ID, "content").text)


def test_restore_from_the_dumps_page_and_watch_it_finish(
    celery_worker, browser, live_server, local_location, target, tmp_path, settings
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    key = make_dump("from-the-browser", local_location)
    release = tmp_path / "release"
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"pre_swap_hooks": [f"testapp_wait {release}"]}}
    operator()
    wait = waiting(browser, 60)
    log_in(browser, live_server, wait, "operator")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    start_restore(browser, live_server, wait, key, "target", TARGET, reversible=True)

    status = wait.until(seen.presence_of_element_located((By.ID, "pgclone-status")))
    wait.until(lambda _: Path(f"{release}.started").exists())  # paused in its hook
    wait.until(lambda _: "pre_swap" in browser.find_element(By.ID, "pgclone-current").text)
    assert status.text == "running"
    browser.save_screenshot(str(ARTIFACTS / "job-running.png"))
    release.touch()
    try:
        wait_for_the_end(browser, wait, "succeeded")
    finally:
        browser.save_screenshot(str(ARTIFACTS / "job-finished.png"))
    content = browser.find_element(By.ID, "content").text
    assert "(running)" not in content
    assert browser.find_element(By.ID, "pgclone-status").text == "succeeded"
    finished = browser.find_element(By.CSS_SELECTOR, ".field-finished_on .readonly").text
    assert finished not in ("", "-")
    steps = browser.find_elements(By.CSS_SELECTOR, "#pgclone-steps td.status")
    assert [step.text for step in steps] == ["succeeded"] * 4
    assert authors(TARGET) == ["from-the-browser"]

    # Undo: back to the database as it was before, from the job's own page. An undo
    # is reversible unless unticked: both copies stay, to redo it.
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"pre_swap_hooks": []}}
    browser.find_element(By.ID, "pgclone-undo").click()
    assert wait.until(seen.presence_of_element_located((By.NAME, "reversible"))).is_selected()
    confirm_restore(browser, wait, "target", TARGET)
    wait_for_the_end(browser, wait, "succeeded")
    assert authors(TARGET) == ["target-only"]
    assert authors(databases.copy_name(TARGET, "previous")) == ["from-the-browser"]
    assert authors(databases.copy_name(TARGET, "current")) == ["target-only"]
    undo = Job.objects.filter(kind=Job.Kind.RESTORE).latest("created_at")
    browser.get(live_server.url + reverse("admin:pgclone_dumps"))
    copies = {
        row.get_attribute("data-target"): row.text
        for row in browser.find_elements(By.CSS_SELECTOR, "#pgclone-copies tr[data-alias=target]")
    }
    made = f"kept by restore job {str(undo.pk)[:8]} on "
    assert "Undo: restore :previous" in copies[":previous"] and made in copies[":previous"]
    assert "as it was before that restore" in copies[":previous"]
    assert "Redo: restore :current" in copies[":current"] and made in copies[":current"]
    assert "as that restore left it" in copies[":current"]

    # The job list, with its duration column, fits a 1280 px window.
    browser.get(f"{live_server.url}/admin/pgclone/job/")
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#result_list th")]
    assert "DURATION" in [header.upper() for header in headers]
    browser.save_screenshot(str(ARTIFACTS / "job-list.png"))
    for scrolled in ("document.documentElement", "document.querySelector('#changelist .results')"):
        fits = f"const e = {scrolled}; return e.scrollWidth <= e.clientWidth"
        assert browser.execute_script(fits), f"{scrolled} scrolls sideways"


def test_cancel_a_running_restore_from_its_page(
    celery_worker, browser, live_server, local_location, target, tmp_path, settings
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    key = make_dump("never", local_location)
    release = tmp_path / "release"
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"pre_swap_hooks": [f"testapp_wait {release}"]}}
    operator()
    wait = waiting(browser, 60)
    log_in(browser, live_server, wait, "operator")
    start_restore(browser, live_server, wait, key, "target", TARGET)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        wait.until(lambda _: Path(f"{release}.started").exists())
        browser.find_element(By.ID, "pgclone-cancel-button").click()
        asked = wait.until(seen.alert_is_present())
        assert asked.text.startswith("Cancel this job?")
        asked.accept()
        # The hook can't be stopped: the page says so, and keeps following the step.
        wait.until(lambda _: "cancelled" in browser.find_element(By.ID, "pgclone-status").text)
        told = browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
        assert "Cancel requested: the pre_swap step runs a hook" in told
        note = browser.find_element(By.ID, "pgclone-note")
        assert "finishes first" in note.text
        step = browser.find_element(By.CSS_SELECTOR, "tr[data-step=pre_swap] td.status")
        assert step.text == "running"
        browser.save_screenshot(str(ARTIFACTS / "job-cancel-requested.png"))
    finally:
        release.touch()  # the hook finishes, and the job goes no further
    step = "tr[data-step=pre_swap] td.status"
    wait.until(lambda _: browser.find_element(By.CSS_SELECTOR, step).text == "failed")
    wait.until(lambda _: not browser.find_element(By.ID, "pgclone-note").is_displayed())
    browser.save_screenshot(str(ARTIFACTS / "job-cancelled.png"))
    live = browser.find_element(By.ID, "pgclone-live").text
    assert live == (
        f"The live database {TARGET} was not changed: the restore stopped before its swap."
    )
    job = Job.objects.get(kind=Job.Kind.RESTORE)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and job.error == "Cancelled by operator (admin)."
    assert authors(TARGET) == ["target-only"] and pgclone_databases() == []


def test_a_restore_that_signs_you_out_says_so(
    celery_worker, browser, live_server, local_location, test_database_name, tmp_path, settings
):
    """Restoring the database the admin itself runs on brings in the dump's users and
    sessions: this browser's session is gone, and the job page says so instead of
    showing "running" forever."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    # The dump holds an account that can sign in (the admin refuses one without), made
    # before the operator exists.
    User.objects.create_user("keeper", password="s3cret-pass", is_staff=True)
    key = make_dump("signed-out", local_location)
    settings.PGCLONE_RESTORE_CONFIGS = {"default": {"pre_swap_hooks": []}}
    operator()
    wait = waiting(browser, 90)
    log_in(browser, live_server, wait, "operator")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    start_restore(browser, live_server, wait, key, "default", test_database_name)

    try:
        note = wait.until(seen.visibility_of_element_located((By.ID, "pgclone-signed-out")))
    finally:
        browser.save_screenshot(str(ARTIFACTS / "job-signed-out.png"))
        connection.close()  # the swap ended this process's connection too
    assert "You were signed out" in note.text
    assert browser.find_element(By.ID, "pgclone-status").text == "unknown (signed out)"
    assert not browser.find_element(By.ID, "pgclone-cancel-button").is_displayed()
    steps = browser.find_elements(By.CSS_SELECTOR, "#pgclone-steps td.status")
    assert not {step.text for step in steps} & {"pending", "running"}  # not known: not shown
    link = note.find_element(By.LINK_TEXT, "Log in again").get_attribute("href")
    assert "/admin/login/?next=" in link
    assert authors(test_database_name) == ["signed-out"]
    assert not User.objects.filter(username="operator").exists()  # the dump's users now
    assert User.objects.filter(username="keeper").exists()
