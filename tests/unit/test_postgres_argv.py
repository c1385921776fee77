from pgclone import postgres

CONN = postgres.ConnInfo(
    name="it's a db", host="db.example", port="5433", user="app", password="hunter2"
)


def test_pg_dump_argv_never_holds_the_password():
    argv = postgres.pg_dump_argv(CONN, exclude_table_data=["auth_user"])
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


def test_excluded_tables_are_exact_quoted_patterns():
    argv = postgres.pg_dump_argv(CONN, exclude_table_data=['we"ird*', "auth_user"])
    assert '--exclude-table-data="we""ird*"' in argv
    assert '--exclude-table-data="auth_user"' in argv


def test_no_password_means_no_pgpassword(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "leaked-from-parent")
    assert "PGPASSWORD" not in postgres.ConnInfo(name="db").env()


def test_repr_hides_the_password():
    assert "hunter2" not in repr(CONN)


def test_list_settings_are_split_as_postgres_stores_them():
    from pgclone.databases import split_list_setting

    assert split_list_setting('"$user", public') == ["$user", "public"]
    assert split_list_setting('app, "My Schema", "we""ird"') == ["app", "My Schema", 'we"ird']
    assert split_list_setting("") == []
