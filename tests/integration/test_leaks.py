"""The leak proof of scrubbed dumps, by a real worker on real data: an original
value of a scrubbed column copied anywhere else fails the dump, naming where,
never the value; a clean dump records its proof; `verify --leaks` searches a
stored dump against the source's current values."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from pgclone.models import Job
from pgclone.storage import storage_for
from tests.helpers import deciding, psql
from tests.integration.test_subset import shop  # noqa: F401 (fixture)
from tests.processes import own_queue, start_worker, stop_worker
from tests.testapp.models import Author, Customer

pytestmark = pytest.mark.django_db(transaction=True)

# Every text-like column of the tables these tests copy is decided: a rule or keep.
RULES = {
    "testapp.Customer": {
        "name": "name",
        "email": "email",
        "phone": "null",
        "notes": "text",
        "ip": "ip",
        "profile": [
            {"rule": "email", "path": ["contact", "email"]},
            {"rule": "phone", "path": ["contact", "phone"]},
        ],
    },
    "testapp.Address": {"street": "address"},
    "testapp.Author": {"name": "keep"},
    "testapp.Product": {"name": "keep"},
    "testapp.Tag": {"name": "keep"},
}
# A table made by raw SQL (no model), there for every test: a config decides it by name.
RAW_TABLE = f"raw_contacts_{os.environ['PGCLONE_TEST_SESSION']}"
DECIDED = {f"public.{RAW_TABLE}": "keep"}
DUMP_CONFIGS = {
    "scrubbed": deciding({"scrub": RULES}, DECIDED),
    "scrubbed_subset": deciding(
        {"scrub": RULES, "subset": {"testapp.Order": {"percent": 10}}}, DECIDED
    ),
}


@pytest.fixture(scope="module")
def leaks_worker(tmp_path_factory, test_database_name, moto_server) -> Iterator[Any]:
    queue = own_queue("leaks")
    env = {"PGCLONE_TEST_QUEUE": queue, "PGCLONE_TEST_DUMP_CONFIGS": json.dumps(DUMP_CONFIGS)}
    log = tmp_path_factory.mktemp("leaks-worker") / "worker.log"
    worker = start_worker(test_database_name, log, moto=moto_server, queue=queue, env=env)
    worker.env = env
    yield worker
    stop_worker(worker)


@pytest.fixture(autouse=True)
def raw_table(test_database_name: str) -> Iterator[str]:
    """A table made by raw SQL (no model), with a text column: empty at each test."""
    name = RAW_TABLE
    psql(f"CREATE TABLE public.{name} (id int PRIMARY KEY, contact text)", test_database_name)
    yield name
    psql(f"DROP TABLE IF EXISTS public.{name}", test_database_name)


def dump(pgclone_cli, worker, location: str, config: str) -> tuple[Any, Job]:
    result = pgclone_cli("dump", "--config", config, "--wait", location=location, env=worker.env)
    return result, Job.objects.filter(kind=Job.Kind.DUMP).latest("created_at")


def copy_into_json(customer: Customer, test_database_name: str, raw_table: str) -> tuple:
    profile = {"contact": {"email": "x@y.example"}, "backup": customer.email}
    Customer.objects.filter(pk=customer.pk).update(profile=profile)
    return "public.testapp_customer", "profile"


def copy_into_other_table(customer: Customer, test_database_name: str, raw_table: str) -> tuple:
    Author.objects.create(name=f"see {customer.email}")
    return "public.testapp_author", "name"


def copy_into_raw_table(customer: Customer, test_database_name: str, raw_table: str) -> tuple:
    psql(f"INSERT INTO public.{raw_table} VALUES (1, 'was {customer.email}')", test_database_name)
    return f"public.{raw_table}", "contact"


@pytest.mark.parametrize(
    "plant", [copy_into_json, copy_into_other_table, copy_into_raw_table], ids=lambda f: f.__name__
)
def test_a_scrubbed_value_copied_elsewhere_fails_the_dump_naming_where_not_what(
    plant,
    shop,  # noqa: F811 (the fixture imported above)
    leaks_worker,
    pgclone_cli,
    local_location,
    test_database_name,
    raw_table,
):
    customer = shop["customers"][7]
    table, column = plant(customer, test_database_name, raw_table)

    result, job = dump(pgclone_cli, leaks_worker, local_location, "scrubbed")

    assert result.returncode != 0
    assert job.status == Job.Status.FAILED
    assert f"in {table}, column {column}: 1 value(s) of public.testapp_customer.email" in job.error
    assert customer.email not in job.error + result.stdout + result.stderr
    assert "real.example" not in job.error
    assert storage_for(local_location).list_keys() == []  # nothing listed
    assert not job.result.get("staged")


def test_a_clean_scrubbed_dump_records_its_proof_in_the_job_and_manifest(
    shop,  # noqa: F811 (the fixture imported above)
    leaks_worker,
    pgclone_cli,
    local_location,
    raw_table,
    test_database_name,
):
    psql(f"INSERT INTO public.{raw_table} VALUES (1, 'nothing personal')", test_database_name)

    result, job = dump(pgclone_cli, leaks_worker, local_location, "scrubbed_subset")

    assert result.returncode == 0, result.stdout + result.stderr
    proof = job.result["leak_proof"]
    # Kept rows only: some of the 200 customers' names, emails, notes, ips, JSON values.
    assert (
        0 < proof["sample"] < 5 * 200 and proof["columns"] == 9
    )  # and auth_user.password, unusable by default
    assert proof["result"] == "passed" and proof["seconds"] >= 0
    manifest = job.result["manifest"]
    assert manifest["leak_proof"] == {"sample": proof["sample"], "columns": 9, "result": "passed"}
    message = job.steps.get(name="dump").message
    assert f"no leak found ({proof['sample']} original values of 9 scrubbed columns" in message


def test_short_values_and_rule_outputs_are_no_leak(
    shop,  # noqa: F811 (the fixture imported above)
    leaks_worker,
    pgclone_cli,
    local_location,
):
    """A customer named as a rule names people, and a 5-byte phone: both also in a
    kept column. Neither proves a leak: the rule writes such names, and 5 bytes
    turn up anywhere."""
    first, second = shop["customers"][3], shop["customers"][4]
    Customer.objects.filter(pk=first.pk).update(name="Jordan Lee")
    Customer.objects.filter(pk=second.pk).update(phone="55501")
    Author.objects.create(name="Jordan Lee")
    Author.objects.create(name="55501")

    result, job = dump(pgclone_cli, leaks_worker, local_location, "scrubbed")

    assert result.returncode == 0, job.error
    assert job.result["leak_proof"]["result"] == "passed"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_verify_leaks_passes_a_clean_dump_and_finds_a_value_the_source_has_since(
    where,
    shop,  # noqa: F811 (the fixture imported above)
    leaks_worker,
    pgclone_cli,
    request,
):
    location = request.getfixturevalue(f"{where}_location")
    Author.objects.create(name="old-contact@corp.example")
    result, job = dump(pgclone_cli, leaks_worker, location, "scrubbed")
    assert result.returncode == 0, job.error
    key = job.dump_key

    clean = pgclone_cli("verify", key, "--leaks", location=location, env=leaks_worker.env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"{key}: no leak found:" in clean.stdout

    # The source gives a customer an address the dump holds in a kept column.
    Customer.objects.filter(pk=shop["customers"][5].pk).update(email="old-contact@corp.example")
    found = pgclone_cli("verify", key, "--leaks", location=location, env=leaks_worker.env)
    assert found.returncode != 0
    said = found.stdout + found.stderr
    assert "in public.testapp_author, column name: 1 value(s) of public.testapp_customer.email" in (
        said
    )
    assert "old-contact@corp.example" not in said
