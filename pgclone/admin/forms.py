"""The admin's forms: dump now, and restore (with the facts of what it restores)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from pgclone import conf, health, humanize
from pgclone.admin import offers
from pgclone.exceptions import PgCloneError
from pgclone.models import Job
from pgclone.payloads import Manifest
from pgclone.pg import postgres
from pgclone.storage.base import DumpInfo

UNTICKED = (
    "Keep :previous (the database as it is now) and :current (as restored) to go back "
    "to. Unticked, the restore removes the :previous and :current copies the database "
    "has now, and keeps none."
)


def config_choices(configs: Any) -> list[tuple[str, str]]:
    names = configs if isinstance(configs, dict) else {}  # a malformed setting: check E003
    return [(name, name) for name in sorted({"default", *names})]


class DumpNowForm(forms.Form):
    config = forms.ChoiceField()
    database = forms.ChoiceField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["config"].choices = config_choices(conf.dump_configs())
        self.fields["database"].choices = offers.postgres_aliases()


def reversible_by_default(key: str, alias: str) -> bool:
    """An undo or a redo keeps the copies, and so does a restore of the admin's own
    database: whoever signs in afterwards can go back."""
    return key in (offers.UNDO, offers.REDO) or offers.runs_the_admin(alias)


class RestoreForm(forms.Form):
    key = forms.CharField(widget=forms.HiddenInput)
    database = forms.ChoiceField(label="Restore into")
    config = forms.ChoiceField(label="Restore config")
    reversible = forms.BooleanField(required=False, help_text=UNTICKED)
    confirm = forms.CharField(widget=forms.TextInput(attrs={"autocomplete": "off"}))

    def __init__(self, *args: Any, alias: str = "default", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["database"].choices = offers.postgres_aliases()
        self.fields["config"].choices = config_choices(conf.restore_configs())
        try:
            name = postgres.conn_info(alias).name
        except PgCloneError:
            name = alias
        self.fields["confirm"].label = f"Type {name} to confirm (the database to overwrite)"
        # The page's script says the name of the database picked in the list instead.
        self.names = {a: postgres.conn_info(a).name for a, _ in offers.postgres_aliases()}

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        alias, key = data.get("database"), data.get("key", "")
        if not alias:
            return data
        name = postgres.conn_info(alias).name
        if data.get("confirm", "").strip() != name:
            self.add_error("confirm", f"Type {name} exactly to confirm the restore.")
        problem = offers.offered_problem(key, alias) if key else ""
        if problem:
            self.add_error("key", problem)
        elif key:
            refusal = offers.lockout_problem(key, alias, facts(key, alias).accounts)
            if refusal:
                self.add_error(None, refusal)
        return data


@dataclass(frozen=True)
class Facts:
    """What the restore form says of what it restores."""

    rows: list[tuple[str, str]]  # (label, text or safe HTML)
    accounts: offers.Accounts
    admin_database: str  # the name of the database the admin runs on, when it is the target


def facts(key: str, alias: str) -> Facts:
    """The facts of ``key`` (a dump or a copy on the server), for ``alias``."""
    try:
        own = offers.runs_the_admin(alias)
        name = postgres.conn_info(alias).name
    except PgCloneError:
        own, name = False, alias
    if key.startswith(":"):
        rows = _copy_rows(key, alias)
        found = offers.accounts_in_copy(alias, key)
    else:
        try:
            info = offers.offered_dump(key)
        except PgCloneError as exc:
            return Facts([("Problem", str(exc))], offers.Accounts(None, str(exc)), "")
        rows = dump_rows(info)
        found = offers.accounts_in_dump(Manifest.from_dict(info.manifest))
    return Facts(rows, found, name if own else "")


def _copy_rows(key: str, alias: str) -> list[tuple[str, str]]:
    made = ""
    if key in (offers.UNDO, offers.REDO):
        maker = offers.copies_maker(postgres.conn_info(alias).name)
        made = offers.provenance(key, maker)
        if maker is not None:
            link = reverse("admin:pgclone_job_change", args=[maker.pk])
            made = format_html('{} (<a href="{}">the job</a>)', made, link)
    return [("Copy", f"{key}: a database on the server, copied as it is now"), ("Made", made)]


def dump_rows(info: DumpInfo) -> list[tuple[str, str]]:
    manifest = Manifest.from_dict(info.manifest)
    created = info.key.created
    age = humanize.human_age((timezone.now() - created).total_seconds())
    size = info.size_text
    if manifest.raw_size:
        size += f" ({humanize.human_bytes(manifest.raw_size)} uncompressed)"
    holds = [flag for flag in offers.data_flags(info) if flag != "rows-excluded"]
    if manifest.excluded_tables:
        holds.append(f"rows left out of {', '.join(manifest.excluded_tables)}")
    recipients = len(manifest.recipients)
    return [
        ("Made", f"{offers.when(created)} ({age} ago) with config {info.key.config}"),
        ("Size", size),
        ("Holds", ", ".join(holds) or "every row of every table"),
        ("Encrypted", f"yes (age, {recipients} recipient(s))" if manifest.encrypted else "no"),
        ("Signed", "yes, its signature checked here" if info.signed else "no"),
        ("Last trial restore", trial_text(health.trial_of(info))),
        ("Failed restores", failed_restores(str(info.key)) or "none"),
    ]


def trial_text(trial: health.Trial | None) -> str:
    if trial is None:
        return "never"
    at = offers.when(trial.at) if trial.at else "?"
    if trial.passed:
        return f"passed {at}" + ("" if trial.bound else f" (unbound: {health.UNBOUND})")
    return f"FAILED {at}: {trial.problem}"


def failed_restores(key: str) -> str:
    """Links to the restores of the dump that failed (a real restore proves as much
    as a trial)."""
    failed = Job.objects.filter(kind=Job.Kind.RESTORE, dump_key=key, status=Job.Status.FAILED)
    return format_html_join(
        ", ",
        '<a href="{}">restore {} FAILED {}</a>',
        (
            (reverse("admin:pgclone_job_change", args=[job.pk]), str(job.pk)[:8], when)
            for job in failed[:5]
            if (when := offers.when(job.created_at))
        ),
    )
