"""No function or operator planted on a database's search_path runs in pgclone's sessions.

The database's owner (a role that is no superuser) sets its database's
search_path to ``public, pg_catalog`` and puts in ``public`` a shadow of every
pg_catalog function whose name appears in pgclone's source, and of the common
operators, each with the same argument types as the real one (so that it wins
for an unqualified call). Each shadow calls the real one, and records that it
ran when the calling session is one of pgclone's (its application_name) by
writing a file on the database server, which works with a superuser's rights
only: the attack of a database whose dumps run as a superuser. A plain, an
excluded-models, a scrubbed and a subset dump and a trial restore, all as a
superuser, must leave no such file. A probe session that is not pinned shows
that the shadows do run when the search_path lets them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgclone import api
from pgclone.checks import check_dump_role
from pgclone.models import Job
from pgclone.pg import postgres, privileges
from tests import pg
from tests.helpers import pgclone_databases, psql
from tests.integration.test_planned import SAFE_CONFIG
from tests.integration.test_subset import shop  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

SOURCE = Path(__file__).resolve().parents[2] / "pgclone"
OPERATORS = ["=", "<>", "<", ">", "<=", ">=", "~~", "!~~", "||", "+", "-", "*", "/", "%",
             "@>", "<@", "&&", "->", "->>", "#>", "#>>", "?", "~", "~*"]  # fmt: skip
SHADOWER = f"pgclone_shadower_{os.environ['PGCLONE_TEST_SESSION']}"


def names_in_source() -> set[str]:
    """Every word followed by '(' in pgclone's code: its SQL's function calls among them."""
    words: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        words |= set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*\(", path.read_text()))
    return words


RECORDER = """
CREATE FUNCTION public.pgclone_shadow_ran(tag text) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    IF current_setting('application_name') LIKE 'pgclone%%'
       AND current_setting('pgclone_shadow.' || tag, true) IS NULL THEN
        PERFORM set_config('pgclone_shadow.' || tag, '1', false);
        EXECUTE format('COPY (SELECT 1) TO PROGRAM %%L', 'cat > ' || %s || '/' || tag);
    END IF;
END $f$
"""


def plant_shadows(cursor, outbox: Path) -> dict[str, str]:
    """The shadows, made in ``public`` by the connected role; returns tag → what it shadows."""
    cursor.execute(RECORDER, [str(outbox)])
    shadows: dict[str, str] = {}
    cursor.execute(
        "SELECT p.oid, p.proname, pg_get_function_result(p.oid), p.proretset, "
        "ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) "
        "WITH ORDINALITY AS a(t, i) ORDER BY i) "
        "FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace "
        "AND p.prokind = 'f' AND p.provariadic = 0 AND p.proname = ANY(%s)",
        [sorted(names_in_source())],
    )
    for oid, name, result, returns_set, args in cursor.fetchall():
        call = f"pg_catalog.{name}({', '.join(f'${i + 1}' for i in range(len(args)))})"
        if returns_set:
            body = f"RETURN QUERY SELECT * FROM {call};"
        elif result == "void":
            body = f"PERFORM {call};"
        else:
            body = f"RETURN {call};"
        tag = f"f_{oid}"
        if _made(
            cursor,
            f"""
            CREATE FUNCTION public.{name}({", ".join(args)}) RETURNS {result}
            LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
            BEGIN PERFORM public.pgclone_shadow_ran('{tag}'); {body} END $f$""",
        ):
            shadows[tag] = f"{name}({', '.join(args)})"
    cursor.execute(
        "SELECT o.oid, o.oprname, format_type(o.oprleft, NULL), format_type(o.oprright, NULL), "
        "format_type(o.oprresult, NULL) FROM pg_operator o "
        "WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprkind = 'b' "
        "AND o.oprname = ANY(%s)",
        [OPERATORS],
    )
    for oid, name, left, right, result in cursor.fetchall():
        tag = f"op_{oid}"
        made = _made(
            cursor,
            f"""
            CREATE FUNCTION public.pgclone_shadow_{tag}(l {left}, r {right}) RETURNS {result}
            LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
            BEGIN PERFORM public.pgclone_shadow_ran('{tag}');
            RETURN l OPERATOR(pg_catalog.{name}) r; END $f$;
            CREATE OPERATOR public.{name} (LEFTARG = {left}, RIGHTARG = {right},
                                           FUNCTION = public.pgclone_shadow_{tag})""",
        )
        if made:
            shadows[tag] = f"{left} {name} {right}"
    return shadows


def _made(cursor, statement: str) -> bool:
    """Run ``statement`` unless it can't be (a pseudo-type argument): whether it was."""
    cursor.execute("SAVEPOINT shadow")
    try:
        cursor.execute(statement.replace("%", "%%"))
    except pg.driver.Error:
        cursor.execute("ROLLBACK TO SAVEPOINT shadow")
        return False
    cursor.execute("RELEASE SAVEPOINT shadow")
    return True


def ran(outbox: Path, shadows: dict[str, str]) -> list[str]:
    return sorted(shadows.get(path.name, path.name) for path in outbox.iterdir())


@pytest.fixture
def shadowed(shop, target: str, outbox: Path) -> Iterator[dict[str, str]]:  # noqa: F811
    """The restore target (a copy of the shop) as its owner left it: shadows on its path."""
    psql(f"CREATE ROLE {SHADOWER} LOGIN NOSUPERUSER")
    try:
        psql(f'ALTER DATABASE "{target}" OWNER TO {SHADOWER}')
        psql(f"GRANT CREATE ON SCHEMA public TO {SHADOWER}", target)
        connection = pg.driver.connect(host="127.0.0.1", user=SHADOWER, dbname=target)
        try:
            with connection.cursor() as cursor:
                cursor.execute("BEGIN")
                shadows = plant_shadows(cursor, outbox)
                cursor.execute(f'ALTER DATABASE "{target}" SET search_path = public, pg_catalog')
                cursor.execute("COMMIT")
        finally:
            connection.close()
        yield shadows
    finally:
        psql(f'ALTER DATABASE "{target}" OWNER TO postgres')
        psql(f'ALTER DATABASE "{target}" RESET search_path')
        psql(f"DROP OWNED BY {SHADOWER} CASCADE", target)
        psql(f"DROP ROLE {SHADOWER}")


def test_the_shadows_run_in_a_session_that_is_not_pinned(shadowed, target, outbox):
    """The attack is real: an unqualified call in a session of the database's
    own search_path runs the owner's function with the caller's rights."""
    assert len(shadowed) > 200  # most of pgclone's functions and the operators
    assert "pg_export_snapshot()" in shadowed.values()
    assert "set_config(text, text, boolean)" in shadowed.values()
    assert "text = text" in shadowed.values()
    connection = pg.driver.connect(
        host="127.0.0.1", user="postgres", dbname=target, application_name="pgclone:probe"
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('x.y', 'z', true), 'a'::text = 'a'::text")
    finally:
        connection.close()
    assert ran(outbox, shadowed) == ["set_config(text, text, boolean)", "text = text"]


def test_no_shadow_runs_in_any_job_made_as_a_superuser(
    shadowed, target, outbox, local_location, settings
):
    settings.PGCLONE_DUMP_CONFIGS = {
        "scrubbed": {"scrub": SAFE_CONFIG["scrub"], "tables": SAFE_CONFIG["tables"]},
        "subset": SAFE_CONFIG,
    }
    settings.PGCLONE_ALLOW_SUPERUSER_RESTORE = True  # the trial restores as a superuser too
    jobs = {
        "plain": api.dump(database="target", inline=True),
        "excluded models": api.dump(
            database="target", exclude_models=["testapp.Secret"], inline=True
        ),
        "scrubbed": api.dump(database="target", config="scrubbed", inline=True),
        "subset": api.dump(database="target", config="subset", inline=True),
    }
    jobs["trial restore"] = api.trial_restore(
        jobs["subset"].dump_key, database="target", pre_swap_hooks=[], inline=True
    )

    failed = {kind: job.error for kind, job in jobs.items() if job.status != Job.Status.SUCCEEDED}
    assert failed == {}
    assert ran(outbox, shadowed) == []
    assert pgclone_databases() == []
    # What still runs with the dumping role's rights is said on every dump made so.
    message = jobs["scrubbed"].steps.get(name="dump").message
    assert "as role 'postgres', which is or can become a superuser" in message
    assert "where and sql rules and the pre-dump hooks" in message


def test_a_system_check_warns_of_dumps_made_as_a_superuser(test_database_name):
    assert [m.id for m in check_dump_role(databases=["default"])] == ["pgclone.W020"]
    # It needs the database: without --database (collectstatic in an image build) it is silent.
    assert check_dump_role(databases=None) == []
    reader = f"pgclone_reader_{os.environ['PGCLONE_TEST_SESSION']}"
    psql(f"CREATE ROLE {reader} LOGIN; GRANT pg_read_all_data TO {reader}")
    try:
        as_reader = dataclasses.replace(postgres.conn_info(), user=reader)
        assert privileges.superuser_dump_warning(as_reader) is None
    finally:
        psql(f"DROP ROLE {reader}")
