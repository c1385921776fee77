"""The admin, through Django's test client: permissions, confirmation, CSRF."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from pgclone import api
from pgclone.engine import jobs
from pgclone.models import Job
from tests.helpers import TARGET, authors, make_dump, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

DUMPS = reverse("admin:pgclone_dumps")
RESTORE = reverse("admin:pgclone_restore")


def staff(username: str, *permissions: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    codenames = ["view_job", *permissions]
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def client_for(user: User, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def restore_form(key: str, confirm: str, database: str = "target") -> dict:
    return {"key": key, "database": database, "config": "default", "confirm": confirm}


@pytest.mark.matrix
def test_dumps_page_lists_storage(local_location):
    key = make_dump("listed", local_location)
    page = client_for(staff("viewer")).get(DUMPS)
    assert page.status_code == 200
    assert key in page.content.decode()
    assert b"Dump now" not in page.content  # no dump_database permission
    assert b"Restore this dump" not in page.content  # no restore_database permission


def test_staff_without_the_permission_cannot_restore(local_location, target):
    key = make_dump("never", local_location)
    client = client_for(staff("staffer"))
    assert client.get(RESTORE, {"key": key}).status_code == 403
    answer = client.post(RESTORE, restore_form(key, TARGET))
    assert answer.status_code == 403
    assert not Job.objects.filter(kind=Job.Kind.RESTORE).exists()
    assert authors(TARGET) == ["target-only"]


def test_wrong_confirmation_is_refused(local_location, target):
    key = make_dump("never", local_location)
    client = client_for(staff("restorer", "restore_database"))
    answer = client.post(RESTORE, restore_form(key, "not-the-name"))
    assert answer.status_code == 200
    assert f"Type {TARGET} exactly to confirm the restore." in answer.content.decode()
    assert not Job.objects.filter(kind=Job.Kind.RESTORE).exists()


def test_csrf_is_enforced(local_location, target):
    key = make_dump("never", local_location)
    client = client_for(staff("restorer", "restore_database"), enforce_csrf_checks=True)
    assert client.post(RESTORE, restore_form(key, TARGET)).status_code == 403
    assert client.post(DUMPS, {"config": "default", "database": "default"}).status_code == 403
    assert not Job.objects.filter(kind=Job.Kind.RESTORE).exists()


@pytest.mark.matrix
def test_a_confirmed_restore_runs_and_records_who_asked(
    celery_worker,
    local_location,
    target,
):
    key = make_dump("from-admin", local_location)
    client = client_for(staff("restorer", "restore_database"))
    page = client.get(RESTORE, {"key": key, "database": "target"})
    assert page.status_code == 200
    assert f"Type {TARGET} to confirm (the database to overwrite)" in page.content.decode()

    answer = client.post(RESTORE, {**restore_form(key, TARGET), "reversible": "on"})

    job = Job.objects.get(kind=Job.Kind.RESTORE)
    assert answer.status_code == 302
    assert answer["Location"] == reverse("admin:pgclone_job_change", args=[job.pk])
    assert job.requested_by == "restorer (admin)" and job.options["reversible"] is True
    status_url = reverse("admin:pgclone_job_status", args=[job.pk])
    done = wait_for(
        lambda: (status := client.get(status_url).json())["finished"] and status,
        what="the restore to finish",
    )
    assert done["status"] == "succeeded", done["error"]
    assert [step["status"] for step in done["steps"]] == ["succeeded"] * 4
    assert authors(TARGET) == ["from-admin"]
    job_page = client.get(answer["Location"])
    assert b'id="pgclone-steps"' in job_page.content and b"swap" in job_page.content


def test_restores_disabled_refuse_in_the_admin_too(local_location, target, settings):
    key = make_dump("never", local_location)
    settings.PGCLONE_ALLOW_RESTORE = False
    client = client_for(staff("restorer", "restore_database"))
    assert b"Restores are disabled here" in client.get(RESTORE, {"key": key}).content
    answer = client.post(RESTORE, restore_form(key, TARGET), follow=True)
    assert b"Restores are disabled here" in answer.content
    job = Job.objects.get(kind=Job.Kind.RESTORE)
    assert job.status == Job.Status.FAILED and job.requested_by == "restorer (admin)"
    assert authors(TARGET) == ["target-only"]


def test_dump_now_needs_its_permission(celery_worker, local_location):
    viewer = client_for(staff("viewer"))
    assert viewer.post(DUMPS, {"config": "default", "database": "default"}).status_code == 403
    assert not Job.objects.exists()

    dumper = client_for(staff("dumper", "dump_database"))
    answer = dumper.post(DUMPS, {"config": "default", "database": "default"})
    job = Job.objects.get()
    assert answer.status_code == 302 and job.requested_by == "dumper (admin)"
    done = wait_for(lambda: Job.objects.filter(pk=job.pk, status__in=Job.FINISHED).first())
    assert done.status == Job.Status.SUCCEEDED, done.error
    assert [str(key) for key in api.ls()] == [done.dump_key]


# What the job page and the dumps page offer ------------------------------------------------


def test_dumps_page_preselects_default_and_shows_where_and_how_big(local_location):
    key = make_dump("sized", local_location)
    page = client_for(staff("dumper", "dump_database")).get(DUMPS).content.decode()

    assert '<option value="default" selected>default</option>' in page
    assert f"<code>{Path(local_location).resolve()}</code>" in page  # not the setting as written
    size = api.dump_infos()[0].size_text
    assert size.endswith("KiB") and f"<td>{size}</td>" in page and key in page


def test_a_running_job_can_be_cancelled_by_who_may_start_its_kind(local_location):
    job = jobs.create_job(
        Job.Kind.DUMP, ("pre_dump",),
        database_alias="default", database_name="shop", config_name="default", options={},
    )  # fmt: skip
    page = reverse("admin:pgclone_job_change", args=[job.pk])
    cancel = reverse("admin:pgclone_job_cancel", args=[job.pk])

    viewer = client_for(staff("viewer"))
    assert b"Cancel this job" not in viewer.get(page).content
    assert viewer.post(cancel).status_code == 403
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING

    dumper = client_for(staff("dumper", "dump_database"))
    assert b"Cancel this job" in dumper.get(page).content
    answer = dumper.post(cancel, follow=True)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and job.error == "Cancelled by dumper (admin)."
    assert "cancelled" in answer.content.decode()
    assert b"Cancel this job" not in dumper.get(page).content  # it ended


def test_job_pages_link_a_dump_and_its_restores_and_offer_undo(local_location, target):
    key = make_dump("linked", local_location)
    made = Job.objects.get(kind=Job.Kind.DUMP)
    restored = api.restore(key, database="target", reversible=True, pre_swap_hooks=[], inline=True)
    assert restored.status == Job.Status.SUCCEEDED, restored.error
    client = client_for(staff("restorer", "restore_database"))

    dump_page = client.get(reverse("admin:pgclone_job_change", args=[made.pk])).content.decode()
    restore_page = client.get(reverse("admin:pgclone_job_change", args=[restored.pk]))
    restore_page = restore_page.content.decode()

    assert reverse("admin:pgclone_job_change", args=[restored.pk]) in dump_page
    assert reverse("admin:pgclone_job_change", args=[made.pk]) in restore_page
    assert f"{RESTORE}?key=%3Aprevious&amp;database=target" in restore_page
    assert "Undo this restore…" in restore_page
    viewer_page = client_for(staff("viewer")).get(
        reverse("admin:pgclone_job_change", args=[restored.pk])
    )
    assert b"Undo this restore" not in viewer_page.content  # may not restore


def test_progress_shows_a_percentage():
    job = jobs.create_job(
        Job.Kind.DUMP, ("pre_dump",),
        database_alias="default", database_name="shop", config_name="default", options={},
    )  # fmt: skip
    Job.objects.filter(pk=job.pk).update(progress_done=3 * 1024**2, progress_total=4 * 1024**2)
    status = client_for(staff("viewer")).get(reverse("admin:pgclone_job_status", args=[job.pk]))
    assert status.json()["progress"] == "3.0 MiB, 75%"


def test_dumps_page_shows_health_and_each_dumps_last_trial(local_location):
    proven = make_dump("proven", local_location)
    newest = make_dump("untried", local_location)
    trial = api.trial_restore(proven, inline=True)
    assert trial.status == Job.Status.SUCCEEDED, trial.error

    page = client_for(staff("viewer")).get(DUMPS).content.decode()

    database = proven.split("/")[0]
    banner = page[page.index('id="pgclone-health"') : page.index("</ul>")]
    assert f'class="success">ok   {database}: newest dump' in banner
    assert "restored in a trial" in banner and f"({proven})" in banner
    table = page[page.index('class="pgclone-dumps"') :]
    rows = {
        key: table[table.index(f"<code>{key}") : table.index("</tr>", table.index(f"<code>{key}"))]
        for key in (proven, newest)
    }
    assert "passed 20" in rows[proven]  # passed YYYY-MM-DD HH:MM
    assert ">never<" in rows[newest]
    # A failed trial turns the banner red.
    Path(local_location, newest).write_bytes(b"not a dump at all")
    assert api.trial_restore(newest, inline=True).status == Job.Status.FAILED
    page = client_for(staff("viewer2")).get(DUMPS).content.decode()
    assert f'class="error">FAIL {database}:' in page and "trial restore FAILED" in page


def test_the_restore_form_counts_the_accounts_of_a_copy_and_says_who_kept_it(
    local_location, target
):
    User.objects.create_user("keeper", password="pw", is_staff=True)  # in the dump: :current
    User.objects.create_user("idle", password="pw", is_staff=True, is_active=False)
    key = make_dump("kept", local_location)
    restored = api.restore(key, database="target", reversible=True, pre_swap_hooks=[], inline=True)
    assert restored.status == Job.Status.SUCCEEDED, restored.error
    client = client_for(staff("restorer", "restore_database"))

    pages = {
        which: client.get(RESTORE, {"key": f":{which}", "database": "target"}).content.decode()
        for which in ("previous", "current")
    }

    counted = "accounts with is_staff and is_active and password usable, counted in"
    assert f"0 ({counted} {TARGET}__previous)" in pages["previous"]  # the target had none
    assert f"1 ({counted} {TARGET}__current)" in pages["current"]  # the dump's active one
    made = f"kept by restore job {str(restored.pk)[:8]} on "
    assert made in pages["previous"] and "as it was before that restore" in pages["previous"]
    assert made in pages["current"] and "as that restore left it" in pages["current"]
    for page in pages.values():  # an undo or a redo keeps the copies unless unticked
        assert 'id="id_reversible" checked' in page


def test_the_admin_index_lists_the_dumps_page_for_whoever_may_view_jobs():
    link = reverse("admin:pgclone_dumpsinstorage_changelist")
    viewer = client_for(staff("viewer"))
    starter = User.objects.create_user("starter", password="pw", is_staff=True)
    starter.user_permissions.set(Permission.objects.filter(codename="dump_database"))
    outsider = client_for(starter)  # a pgclone permission, but not view_job

    for page in (reverse("admin:index"), reverse("admin:app_list", args=["pgclone"])):
        listed = viewer.get(page).content.decode()
        assert f'<a href="{link}">Dumps in storage</a>' in listed, page
        assert f'<a href="{reverse("admin:pgclone_job_changelist")}">Jobs</a>' in listed
        assert "Dumps in storage" not in outsider.get(page).content.decode(), page
    assert link == DUMPS
    page = viewer.get(link).content.decode()
    # The sidebar marks the dumps entry as the page shown, not Jobs.
    assert '<tr class="model-dumpsinstorage current-model">' in page
    assert '<tr class="model-job">' in page
    assert outsider.get(link).status_code == 403
    # The pages' first addresses, under the jobs, lead to them still.
    moved = viewer.get("/admin/pgclone/job/dumps/restore/?key=K&database=default")
    assert moved.url == reverse("admin:pgclone_restore") + "?key=K&database=default"
    assert viewer.get("/admin/pgclone/job/dumps/").url == DUMPS
