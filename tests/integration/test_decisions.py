"""A scrubbed dump decides every column and copies no credential: the attack on
a config shaped like the docs' own example, on a project with a signed-in
superuser's session, an admin log entry, an API token table and a raw-SQL
table of emails, made by a real worker and restored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.hashers import is_password_usable
from django.contrib.auth.models import User
from django.test import Client

from pgclone import api
from pgclone.checks import check_scrub_decisions
from pgclone.models import Job
from tests.helpers import deciding, pgclone_databases, psql
from tests.integration.test_subset import shop  # noqa: F401 (fixture)
from tests.processes import own_queue, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

# docs/sharing.md's example, on the test project's shop.
README = {
    "scrub": {
        "auth.User": {
            "email": "email",
            "first_name": "first_name",
            "last_name": "last_name",
            "password": "unusable_password",
        },
        "testapp.Customer": {"name": "name", "email": "email", "phone": "null"},
    },
    "subset": {"testapp.Order": {"percent": 10}},
}
# README with rules for what the leak proof finds otherwise in this project: the
# customers' emails in their JSON profiles, a customer's name in the admin log.
RULED = {
    **README,
    "scrub": {
        **README["scrub"],
        "testapp.Customer": {
            **README["scrub"]["testapp.Customer"],
            "profile": [
                {"rule": "email", "path": ["contact", "email"]},
                {"rule": "phone", "path": ["contact", "phone"]},
            ],
        },
        "admin.LogEntry": {"object_repr": "text"},
    },
}
RAW_TABLES = """
    CREATE TABLE authtoken_token (
        key varchar(40) PRIMARY KEY,
        created timestamptz NOT NULL DEFAULT now(),
        user_id integer NOT NULL REFERENCES auth_user (id)
    );
    CREATE TABLE legacy_contacts (id serial PRIMARY KEY, email text NOT NULL, born date);
"""


@pytest.fixture
def attacked(shop, test_database_name) -> Iterator[dict[str, Any]]:  # noqa: F811
    """The shop, users holding customers' emails, a superuser signed in (a real
    session row), an admin log entry naming a customer, a token per user in a
    raw-SQL authtoken_token (key as primary key) and raw-SQL contacts."""
    admin = User.objects.create_superuser("root-admin", "root@real.example", "pw-Real-Secret-1")
    users = [
        User.objects.create_user(f"customer-{c.pk}", c.email, "pw", first_name="Realfirst")
        for c in shop["customers"][::10]
    ]
    client = Client()
    client.force_login(admin)
    assert client.get("/").status_code in (200, 404)  # the session is stored
    customer = shop["customers"][3]
    LogEntry.objects.create(
        user=admin, object_id=str(customer.pk), object_repr=customer.name, action_flag=CHANGE
    )
    psql(RAW_TABLES, test_database_name)
    psql(
        "INSERT INTO authtoken_token (key, user_id) "
        "SELECT md5('token' || id), id FROM auth_user; "
        "INSERT INTO legacy_contacts (email) "
        "SELECT 'contact' || i || '@real.example' FROM generate_series(1, 30) i",
        test_database_name,
    )
    yield {"admin": admin, "users": users, "session": client.session.session_key}
    psql("DROP TABLE IF EXISTS authtoken_token, legacy_contacts", test_database_name)


def cli(pgclone_cli, location: str, configs: dict, *args: str):
    env = {"PGCLONE_TEST_DUMP_CONFIGS": json.dumps(configs)}
    return pgclone_cli(*args, location=location, env=env)


def reviewed(skeleton: str) -> dict:
    """The skeleton pasted into the config, and reviewed: the JSON profile's
    emails and phones get rules, the admin log's text of an object too."""
    config = {**README, **eval("{" + skeleton + "}")}  # noqa: S307 (Python to paste)
    config["scrub"]["testapp.Customer"]["profile"] = [
        {"rule": "email", "path": ["contact", "email"]},
        {"rule": "phone", "path": ["contact", "phone"]},
    ]
    config["scrub"]["admin.LogEntry"]["object_repr"] = "text"
    return config


def test_the_docs_config_is_refused_until_every_column_is_decided(
    attacked, settings, pgclone_cli, local_location
):
    settings.PGCLONE_DUMP_CONFIGS = {"readme": README}

    job = api.dump(config="readme", inline=True)

    assert job.status == Job.Status.FAILED
    for name in (
        "auth.User.username (character varying(150))",
        "testapp.Customer.notes (text)",
        "testapp.Customer.profile (jsonb)",
        "testapp.Customer.ip (inet)",
        "admin.LogEntry.object_repr (character varying(200))",
        "django_celery_beat.PeriodicTask.kwargs (text)",
        "public.legacy_contacts.email (text)",  # not a model's: read from the catalog
    ):
        assert f"- {name}\n" in job.error, name
    # Credentials are emptied, the password made unusable: nothing to decide there.
    for decided in ("django_session", "Session.", "authtoken_token", "User.password"):
        assert decided not in job.error
    assert "raw_size" not in job.result and api.ls() == []

    checked = cli(pgclone_cli, local_location, {"readme": README}, "scrub-check")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "readme: undecided: public.legacy_contacts.email (text)" in checked.stdout
    assert "readme: copied empty (holds credentials): public.django_session" in checked.stdout
    assert "readme: copied empty (holds credentials): public.authtoken_token" in checked.stdout
    assert "readme: kept by default (no text in their types): public.testapp_orderitem: " in (
        checked.stdout
    )
    assert "are undecided" in checked.stderr
    # The dump named each column scrub-check lists, and only those.
    refused = {line[2:] for line in job.error.splitlines() if line.startswith("- ")}
    listed = {
        line.split("undecided: ", 1)[1]
        for line in checked.stdout.splitlines()
        if line.startswith("readme: undecided: ")
    }
    assert refused == listed and len(listed) > 20
    (warning,) = check_scrub_decisions(databases=["default"])
    assert warning.id == "pgclone.W030" and "public.legacy_contacts.email" in warning.msg

    skeleton = cli(
        pgclone_cli, local_location, {"readme": README}, "scrub-check", "--config", "readme",
        "--skeleton",
    )  # fmt: skip
    assert skeleton.returncode == 1
    assert '"email": "email",  # new: text' in skeleton.stdout  # under public.legacy_contacts
    config = reviewed(skeleton.stdout)
    passed = cli(pgclone_cli, local_location, {"readme": config}, "scrub-check")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Every column is decided. Checked: readme." in passed.stdout
    settings.PGCLONE_DUMP_CONFIGS = {"readme": config}
    assert check_scrub_decisions(databases=["default"]) == []


def originals(database: str, config: dict) -> set[str]:
    """Every value in the source of every column the config scrubs (JSON: at its paths)."""
    from django.apps import apps

    found = set()
    columns = [
        (apps.get_model(label)._meta.db_table, apps.get_model(label)._meta.get_field(f).column,
         rule)
        for label, fields in config["scrub"].items() for f, rule in fields.items()
    ] + [
        (label.split(".")[1], column, rule)
        for label, spec in config.get("tables", {}).items() if isinstance(spec, dict)
        for column, rule in spec.items()
    ]  # fmt: skip
    for table, column, rule in columns:
        if rule == "keep":
            continue
        paths = [r["path"] for r in rule] if isinstance(rule, list) else [None]
        for path in paths:
            value = f"{column}::text" if path is None else f"{column} #>> '{{{','.join(path)}}}'"
            rows = psql(f"SELECT DISTINCT {value} FROM {table} WHERE {column} IS NOT NULL",
                        database)  # fmt: skip
            found |= {row for row in rows.splitlines() if row}
    return found


def every_value(database: str) -> tuple[set[str], str]:
    """Every value of every column of every table of the database, as text: the
    set of them, and all of them in one text."""
    tables = psql(
        "SELECT string_agg(quote_ident(tablename), ' ') FROM pg_tables WHERE schemaname = 'public'",
        database,
    ).split()
    values = set()
    for table in tables:
        found = psql(
            f"SELECT string_agg(v, E'\\x01') FROM {table} AS t, jsonb_each_text(to_jsonb(t)) "
            "AS e(k, v)",
            database,
        )
        values |= set(found.split("\x01"))
    return values, "\n".join(values)


def test_once_decided_the_dump_holds_no_session_no_token_and_no_scrubbed_value(
    attacked, settings, pgclone_cli, local_location, target, test_database_name, moto_server,
    tmp_path,
):  # fmt: skip
    skeleton = cli(
        pgclone_cli, local_location, {"readme": README}, "scrub-check", "--config", "readme",
        "--skeleton",
    ).stdout  # fmt: skip
    config = reviewed(skeleton)
    queue = own_queue("decide")
    env = {"PGCLONE_TEST_DUMP_CONFIGS": json.dumps({"readme": config}), "PGCLONE_TEST_QUEUE": queue}
    worker = start_worker(
        test_database_name, tmp_path / "worker.log", moto=moto_server, queue=queue, env=env
    )
    try:
        made = pgclone_cli("dump", "--config", "readme", "--wait", location=local_location,
                           env=env)  # fmt: skip
        assert made.returncode == 0, made.stdout + made.stderr
        key = Job.objects.get(kind=Job.Kind.DUMP).dump_key
        manifest = json.loads((Path(local_location) / f"{key}.json").read_text())
        restored = pgclone_cli("restore", key, "--database", "target", "--wait",
                               location=local_location, env=env)  # fmt: skip
        assert restored.returncode == 0, restored.stdout + restored.stderr
    finally:
        stop_worker(worker)

    assert manifest["scrubbed"] is True and len(manifest["plan"]["decisions"]) == 64
    assert {"public.django_session", "public.authtoken_token"} <= set(manifest["excluded_tables"])

    source = test_database_name
    assert int(psql("SELECT count(*) FROM django_session", source)) >= 1
    assert psql("SELECT count(*) FROM django_session", target) == "0"  # the table is there
    assert int(psql("SELECT count(*) FROM authtoken_token", source)) >= 20
    assert psql("SELECT count(*) FROM authtoken_token", target) == "0"
    passwords = psql("SELECT string_agg(password, ' ') FROM auth_user", target).split()
    assert passwords and not any(is_password_usable(p) for p in passwords)
    assert psql("SELECT count(*) FROM legacy_contacts", target) == "30"
    values, written = every_value(target)
    scrubbed = originals(source, config)
    assert len(scrubbed) > 500  # names, emails, phones, passwords, contacts, profiles…
    leaked = [v for v in scrubbed if v in values or (len(v) >= 6 and v in written)]
    assert leaked == []
    assert attacked["session"] not in written
    assert pgclone_databases() == []


def dumped(settings, configs: dict, name: str) -> Job:
    settings.PGCLONE_DUMP_CONFIGS = configs
    return api.dump(config=name, inline=True)


def test_an_empty_scrub_section_or_a_new_column_is_refused_naming_the_columns(
    attacked, settings, local_location, test_database_name
):
    job = dumped(settings, {"empty": {"scrub": {}}}, "empty")
    assert job.status == Job.Status.FAILED
    assert "- testapp.Customer.email (character varying(254))\n" in job.error
    assert "- public.legacy_contacts.email (text)\n" in job.error

    decided = deciding(RULED, {"public.legacy_contacts": {"email": "email"}})
    settings.PGCLONE_DUMP_CONFIGS = {"decided": decided}
    psql("ALTER TABLE testapp_customer ADD COLUMN nickname text", test_database_name)
    try:
        job = api.dump(config="decided", inline=True)
    finally:
        psql("ALTER TABLE testapp_customer DROP COLUMN nickname", test_database_name)
    assert job.status == Job.Status.FAILED
    assert "these 1 column(s)" in job.error
    assert "- public.testapp_customer.nickname (text)\n" in job.error  # no field: by its table
    assert api.ls() == []

    job = api.dump(config="decided", inline=True)
    assert job.status == Job.Status.SUCCEEDED, job.error


def manifest_of(job: Job, location: str) -> dict:
    assert job.status == Job.Status.SUCCEEDED, job.error
    return json.loads((Path(location) / f"{job.dump_key}.json").read_text())


def test_a_credential_table_is_kept_only_by_name_and_never_one_keyed_by_its_secret(
    attacked, settings, local_location, test_database_name
):
    base = deciding(RULED, {"public.legacy_contacts": "keep"})
    sessions = {**base, "tables": {**base["tables"], "public.django_session": "keep"}}
    job = dumped(settings, {"s": sessions}, "s")
    assert job.status == Job.Status.FAILED
    assert "public.django_session holds Django's sessions" in job.error
    assert "can't be kept" in job.error

    psql(
        "CREATE TABLE knox_authtoken (digest varchar(128) PRIMARY KEY, token_key varchar(25), "
        "user_id integer NOT NULL REFERENCES auth_user (id));"
        "INSERT INTO knox_authtoken SELECT md5(id::text), left(md5(id::text), 8), id "
        "FROM auth_user",
        test_database_name,
    )
    try:
        emptied = manifest_of(dumped(settings, {"s": base}, "s"), local_location)
        knox = {**base["tables"], "public.knox_authtoken": {"token_key": "hash", "digest": "keep"}}
        kept = manifest_of(dumped(settings, {"k": {**base, "tables": knox}}, "k"), local_location)
    finally:
        psql("DROP TABLE knox_authtoken", test_database_name)
    for table in ("public.knox_authtoken", "public.authtoken_token", "public.django_session"):
        assert table in emptied["excluded_tables"], table
    assert "public.knox_authtoken" not in kept["excluded_tables"]
    assert kept["plan"]["rows"]["public.knox_authtoken"] == User.objects.count()
    assert kept["plan"]["decisions"] != emptied["plan"]["decisions"]
    assert kept["plan"]["digest"] != emptied["plan"]["digest"]  # a rule more


def test_exclude_tables_leaves_a_raw_tables_rows_out_of_any_dump(
    attacked, settings, local_location, target, test_database_name
):
    job = dumped(settings, {"lean": {"exclude_tables": ["public.legacy_contacts"]}}, "lean")
    manifest = manifest_of(job, local_location)
    assert manifest["excluded_tables"] == ["public.legacy_contacts"]
    assert not manifest.get("scrubbed")
    restored = api.restore(job.dump_key, database="target", pre_swap_hooks=[], inline=True)
    assert restored.status == Job.Status.SUCCEEDED, restored.error
    assert psql("SELECT count(*) FROM legacy_contacts", target) == "0"
    assert psql("SELECT count(*) FROM django_session", target) != "0"  # not scrubbed: kept


@pytest.mark.parametrize(("tables", "shown"), [([], "-"), (["public.auth_user"], "scrubbed")])
def test_ls_and_the_admin_call_a_dump_scrubbed_only_when_its_plan_changed_a_table(
    settings, pgclone_cli, local_location, tables, shown
):
    """A manifest made with ``"scrub": {}`` said "scrubbed" with no table changed."""
    from django.urls import reverse

    from tests.helpers import make_dump

    key = make_dump("plain-ann", local_location)
    path = Path(local_location) / f"{key}.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "scrubbed": True, "plan": {"tables": tables}}))

    listed = pgclone_cli("ls", "--long", location=local_location).stdout
    row = next(line for line in listed.splitlines() if key in line)
    assert ("scrubbed" in row) is (shown == "scrubbed"), row
    client = Client()
    client.force_login(User.objects.create_superuser("admin-ls", "a@example.invalid", "pw"))
    page = client.get(reverse("admin:pgclone_dumps")).content.decode()
    assert f'<td class="pgclone-data">{shown}</td>' in page


def test_the_catalog_sees_through_domains_and_arrays_and_skips_generated_columns(
    test_database_name,
):
    from pgclone.pg import catalog, postgres
    from pgclone.sharing import deciding

    psql(
        "CREATE DOMAIN pgclone_t28_mail AS text; "
        "CREATE DOMAIN pgclone_t28_mails AS pgclone_t28_mail[]; "
        "CREATE TABLE pgclone_t28_odd (id int PRIMARY KEY, mails pgclone_t28_mails, "
        "seen inet[], doc bytea, tag char(3), n numeric, at date, code uuid, "
        "upper_tag text GENERATED ALWAYS AS (upper(tag)) STORED)",
        test_database_name,
    )
    try:
        with (
            postgres.connect(postgres.conn_info()) as connection,
            connection.cursor() as cursor,
        ):
            found = [c for c in catalog.data_columns(cursor) if c.table == "pgclone_t28_odd"]
    finally:
        psql(
            "DROP TABLE pgclone_t28_odd; DROP DOMAIN pgclone_t28_mails; "
            "DROP DOMAIN pgclone_t28_mail",
            test_database_name,
        )
    assert {c.name: c.base for c in found} == {
        "id": "int4", "mails": "text", "seen": "inet", "doc": "bytea", "tag": "bpchar",
        "n": "numeric", "at": "date", "code": "uuid",
    }  # fmt: skip
    assert [c.name for c in found if deciding.needs_decision(c)] == ["mails", "seen", "doc", "tag"]
    assert [c.name for c in found if c.key] == ["id"]
