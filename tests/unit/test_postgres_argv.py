import os

from pgclone.pg import postgres

CONN = postgres.ConnInfo(
    name="it's a db", host="db.example", port="5433", user="app", password="hunter2"
)


def test_pg_dump_argv_never_holds_the_password():
    argv = postgres.pg_dump_argv(CONN, exclude_table_data=[("public", "auth_user")])
    assert not any("hunter2" in part for part in argv)
    assert CONN.env()["PGPASSWORD"] == "hunter2"
    assert "--no-password" in argv


def test_pg_dump_writes_uncompressed_custom_format_to_stdout():
    argv = postgres.pg_dump_argv(CONN)
    assert argv[:3] == ["pg_dump", "--format=custom", "--compress=0"]
    assert not any(part.startswith(("-f", "--file")) for part in argv)


def test_database_name_is_a_quoted_conninfo_value():
    argv = postgres.pg_dump_argv(CONN)
    dbname = argv[-1]
    assert dbname.startswith("--dbname=")
    assert "dbname='it\\'s a db'" in dbname
    assert "host='db.example'" in dbname and "port='5433'" in dbname and "user='app'" in dbname


def test_names_that_look_like_options_stay_names():
    conn = postgres.ConnInfo(name="x host=evil.example")
    assert "dbname='x host=evil.example'" in conn.conninfo()


def test_excluded_tables_are_exact_qualified_quoted_patterns():
    # pg_dump looks an unqualified pattern up on the session's search_path, which
    # pgclone pins to pg_catalog: it would match none of the project's tables.
    argv = postgres.pg_dump_argv(
        CONN, exclude_table_data=[("public", 'we"ird*'), ("Odd Schema", "auth_user")]
    )
    assert '--exclude-table-data="public"."we""ird*"' in argv
    assert '--exclude-table-data="Odd Schema"."auth_user"' in argv


def test_every_session_pins_search_path_at_connect_time(monkeypatch):
    monkeypatch.setenv("PGOPTIONS", "-c search_path=public -c work_mem=64MB")
    options = "-c search_path=public -c work_mem=64MB -c search_path=pg_catalog,pg_temp"
    assert CONN.connect_kwargs()["options"] == options  # the last -c of a name wins
    assert f"options='{options}'" in postgres.pg_dump_argv(CONN)[-1]
    assert f"options='{options}'" in postgres.pg_restore_argv(CONN)[-1]
    project = postgres.ConnInfo(name="db", project_options="-c search_path=app")
    assert project.connect_kwargs(pinned=False)["options"] == "-c search_path=app"
    assert project.connect_kwargs()["options"] == options


def test_programs_get_an_allowlisted_environment(monkeypatch):
    monkeypatch.setenv("PGCLONE_AGE_IDENTITY", "AGE-SECRET-KEY-1XYZ")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("PGSSLMODE", "require")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = CONN.env()
    assert "PGCLONE_AGE_IDENTITY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["PGSSLMODE"] == "require" and env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"] == os.environ["PATH"]


def test_no_password_means_no_pgpassword(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "leaked-from-parent")
    assert "PGPASSWORD" not in postgres.ConnInfo(name="db").env()


def test_repr_hides_the_password():
    assert "hunter2" not in repr(CONN)


def test_list_settings_are_split_as_postgres_stores_them():
    from pgclone.pg.databases import split_list_setting

    assert split_list_setting('"$user", public') == ["$user", "public"]
    assert split_list_setting('app, "My Schema", "we""ird"') == ["app", "My Schema", 'we"ird']
    assert split_list_setting("") == []
