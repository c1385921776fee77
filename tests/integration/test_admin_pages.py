"""The admin's pages as their users meet them, in headless Chromium at 1400 and 800 px:
the dumps page on the admin's index and the dumps' kept copies, the restore form's
facts and its refusal of a restore that would lock everyone out, active jobs kept from
deletion, a job no worker takes, a long error."""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from pgclone import api, humanize
from pgclone.engine import jobs
from pgclone.models import Job
from tests.helpers import make_dump, psql
from tests.integration.test_admin_browser import ARTIFACTS, log_in, operator, waiting
from tests.processes import own_queue

pytestmark = pytest.mark.django_db(transaction=True)

WIDE, NARROW = 1400, 800


def at_width(browser, width: int) -> None:
    browser.set_window_size(width, 1000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)


def fits(browser, css: str = "") -> bool:
    """Nothing scrolls sideways: the page, or the element ``css`` picks."""
    target = f"document.querySelector({css!r})" if css else "document.documentElement"
    return browser.execute_script(f"const e = {target}; return e.scrollWidth <= e.clientWidth")


def allow(user, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))


def test_the_restore_form_shows_the_facts_and_refuses_to_lock_everyone_out(
    browser, live_server, local_location, test_database_name
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.select import Select

    # The dump's only staff account is inactive; the operator is made after it.
    User.objects.create_user("former", password="s3cret-pass", is_staff=True, is_active=False)
    key = make_dump("nobody-signs-in", local_location)
    operator()
    wait = waiting(browser, 30)
    log_in(browser, live_server, wait, "operator")

    for width in (WIDE, NARROW):
        at_width(browser, width)
        browser.get(f"{live_server.url}/admin/")
        entry = browser.find_element(By.LINK_TEXT, "Dumps in storage")  # beside Jobs
        assert fits(browser), f"the admin's index scrolls sideways at {width} px"
        browser.save_screenshot(str(ARTIFACTS / f"index-{width}.png"))
        entry.click()
        row = wait.until(seen.presence_of_element_located((By.XPATH, f"//tr[td/code='{key}']")))
        button = row.find_element(By.CSS_SELECTOR, "a.button")
        assert fits(browser), f"the dumps page scrolls sideways at {width} px"
        right = browser.execute_script("return arguments[0].getBoundingClientRect().right", button)
        assert right <= browser.execute_script("return window.innerWidth"), f"at {width} px"
        browser.save_screenshot(str(ARTIFACTS / f"dumps-{width}.png"))
    button.click()

    facts = wait.until(seen.presence_of_element_located((By.ID, "pgclone-facts"))).text
    for fact in ("Made", "Size", "Holds every row of every table", "Encrypted no", "Signed no"):
        assert fact in facts
    assert "Last trial restore never" in facts and "Failed restores none" in facts
    accounts = browser.find_element(By.ID, "pgclone-accounts").text
    assert (
        f"after a restore into {test_database_name}, the database this admin runs on: "
        "0 (accounts of public.auth_user with is_staff and is_active and password usable, "
        "counted in the dump when it was made)"
    ) in accounts
    assert browser.find_element(By.NAME, "reversible").is_selected()  # the admin's own database
    label = browser.find_element(By.CSS_SELECTOR, "label[for=id_confirm]").text
    assert label.startswith(f"Type {test_database_name} to confirm")
    Select(browser.find_element(By.NAME, "database")).select_by_value("target")
    assert browser.find_element(By.CSS_SELECTOR, "label[for=id_confirm]").text.startswith(
        "Type pgclone_target_"
    )
    Select(browser.find_element(By.NAME, "database")).select_by_value("default")
    browser.find_element(By.NAME, "confirm").send_keys(test_database_name)
    browser.find_element(By.CSS_SELECTOR, "#pgclone-restore input[type=submit]").click()

    refusal = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, ".errorlist.nonfield")))
    assert refusal.text.startswith(
        f"Refused: restoring {key} into '{test_database_name}', the database this admin runs "
        "on, would leave no account that can sign in to the admin"
    )
    assert "manage.py pgclone restore" in refusal.text
    assert fits(browser), "the restore form scrolls sideways at 800 px"
    browser.execute_script("arguments[0].scrollIntoView()", refusal)
    browser.save_screenshot(str(ARTIFACTS / "restore-refused-800.png"))
    browser.execute_script("window.scrollTo(0, 0)")
    at_width(browser, WIDE)
    browser.save_screenshot(str(ARTIFACTS / "restore-refused-1400.png"))
    assert not Job.objects.filter(kind=Job.Kind.RESTORE).exists()


def test_the_dumps_page_shows_which_dumps_have_a_kept_copy(
    browser, live_server, local_location, target, settings
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    settings.PGCLONE_RESTORE_CONFIGS = {"keep": {"keep_copy": True, "pre_swap_hooks": []}}
    plain = make_dump("not-kept", local_location)
    key = make_dump("kept-ann", local_location)
    job = api.restore(key, config="keep", database="target", inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error
    name = job.result["kept_copy"]
    try:
        size = humanize.human_bytes(int(psql(f"SELECT pg_database_size('{name}')")))
        operator()
        wait = waiting(browser, 30)
        log_in(browser, live_server, wait, "operator")
        for width in (WIDE, NARROW):
            at_width(browser, width)
            browser.get(live_server.url + reverse("admin:pgclone_dumps"))
            row = wait.until(seen.presence_of_element_located((By.XPATH, f"//tr[td/code='{key}']")))
            shown = row.find_element(By.CSS_SELECTOR, "td.pgclone-kept").text
            assert re.fullmatch(rf"{re.escape(size)}, kept \d+[sm] ago", shown), shown
            other = browser.find_element(By.XPATH, f"//tr[td/code='{plain}']")
            assert other.find_element(By.CSS_SELECTOR, "td.pgclone-kept").text == "-"
            copy = browser.find_element(By.CSS_SELECTOR, f"#pgclone-kept tr[data-key='{key}']")
            cells = [cell.text for cell in copy.find_elements(By.TAG_NAME, "td")]
            assert cells[:3] == [name, key, size] and cells[3].endswith(" ago"), cells
            assert "default" in cells[4] and "target" in cells[4]  # one server, both aliases
            assert fits(browser), f"the dumps page scrolls sideways at {width} px"
            browser.save_screenshot(str(ARTIFACTS / f"dumps-kept-{width}.png"))
    finally:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_active_job_cant_be_deleted_and_a_finished_one_can(
    browser, live_server, test_database_name
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.select import Select

    active = jobs.create_job(
        Job.Kind.RESTORE, ("fetch", "swap"), database_alias="target",
        database_name=f"shop_{uuid.uuid4().hex[:8]}", config_name="default", options={},
    )  # fmt: skip
    ended = jobs.create_job(
        Job.Kind.DUMP, ("dump",), database_alias="default", database_name="shop",
        config_name="default", options={}, status=Job.Status.FAILED, error="It failed.",
    )  # fmt: skip
    allow(operator(), "delete_job")
    wait = waiting(browser, 30)
    log_in(browser, live_server, wait, "operator")
    at_width(browser, WIDE)

    browser.get(f"{live_server.url}/admin/pgclone/job/{active.pk}/change/")
    wait.until(seen.presence_of_element_located((By.ID, "pgclone-job-progress")))
    assert not browser.find_elements(By.CSS_SELECTOR, "a.deletelink")
    browser.get(f"{live_server.url}/admin/pgclone/job/{active.pk}/delete/")
    assert "403" in browser.title or "Forbidden" in browser.page_source

    browser.get(f"{live_server.url}/admin/pgclone/job/")
    for job in (active, ended):
        picked = f"input[name=_selected_action][value='{job.pk}']"
        browser.find_element(By.CSS_SELECTOR, picked).click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("delete_selected")
    listing = browser.find_element(By.ID, "content")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    wait.until(seen.staleness_of(listing))  # the answer, not the list it was asked from
    content = wait.until(seen.presence_of_element_located((By.ID, "content"))).text
    refused = f"Restore job {str(active.pk)[:8]} is pending: a job can be deleted once it has ended"
    assert refused in content
    assert not browser.find_elements(By.CSS_SELECTOR, "input[type=submit][value*='sure']")
    browser.save_screenshot(str(ARTIFACTS / "delete-refused.png"))
    assert Job.objects.filter(pk__in=[active.pk, ended.pk]).count() == 2

    browser.get(f"{live_server.url}/admin/pgclone/job/{ended.pk}/delete/")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(lambda _: not Job.objects.filter(pk=ended.pk).exists())
    assert Job.objects.filter(pk=active.pk, status=Job.Status.PENDING).exists()


def test_a_job_no_worker_takes_says_where_it_waits(
    browser, live_server, local_location, settings, test_database_name
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    queue = own_queue("idle")  # a queue no worker consumes from
    settings.PGCLONE_CELERY_QUEUE = queue
    allow(operator(), "dump_database")
    wait = waiting(browser, 40)
    log_in(browser, live_server, wait, "operator")
    at_width(browser, WIDE)
    browser.get(live_server.url + reverse("admin:pgclone_dumps"))
    browser.find_element(By.CSS_SELECTOR, "#pgclone-dump-now input[type=submit]").click()
    job = wait.until(lambda _: Job.objects.filter(kind=Job.Kind.DUMP).first())
    try:
        note = wait.until(seen.visibility_of_element_located((By.ID, "pgclone-note")))
        assert note.text == f"Queued on {queue}: waiting for a worker to take it."
        wait.until(lambda _: "no worker has taken it" in note.text)
        assert note.text.endswith(f"Is a Celery worker running and consuming from {queue}?")
        assert browser.find_element(By.ID, "pgclone-status").text == "pending"
        browser.save_screenshot(str(ARTIFACTS / "job-queued.png"))
    finally:
        api.cancel(job.pk)


def test_a_long_error_is_shown_once_wrapped_with_whether_the_live_database_changed(
    browser, live_server, test_database_name
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen

    job = jobs.create_job(
        Job.Kind.RESTORE, ("fetch", "restore_temp", "pre_swap", "swap"), database_alias="target",
        database_name=f"shop_{uuid.uuid4().hex[:8]}", config_name="default", options={},
    )  # fmt: skip
    error = "pg_restore: error: could not execute query: " + "relation_does_not_exist_" * 30
    jobs.fail_step(job.pk, "fetch", error)
    operator()
    wait = waiting(browser, 30)
    log_in(browser, live_server, wait, "operator")

    for width in (WIDE, NARROW):
        at_width(browser, width)
        browser.get(f"{live_server.url}/admin/pgclone/job/{job.pk}/change/")
        shown = wait.until(seen.visibility_of_element_located((By.ID, "pgclone-error")))
        assert shown.text == error
        assert browser.find_element(By.ID, "content").text.count("pg_restore: error") == 1
        step = browser.find_element(By.CSS_SELECTOR, "tr[data-step=fetch] td.message").text
        assert step == "failed: the error is below"
        live = browser.find_element(By.ID, "pgclone-live").text
        assert live.startswith(f"The live database {job.database_name} was not changed")
        assert fits(browser, "#pgclone-error"), f"the error is cut at {width} px"
        assert fits(browser), f"the job page scrolls sideways at {width} px"
        status = browser.find_element(By.ID, "pgclone-status")
        assert status.text == "failed" and "pgclone-failed" in status.get_attribute("class")
        browser.save_screenshot(str(ARTIFACTS / f"job-failed-{width}.png"))
