"""What a restore leaves out of, or refuses in, a dump's list (``pg_restore --list``)
given what its temporary database holds (no services: the list is text)."""

from __future__ import annotations

import pytest

from pgclone.archive import restore_lists
from pgclone.exceptions import ConfigurationError, ExtensionUnavailable
from pgclone.pg import extensions

# `pg_restore --list` of a dump of a GeoDjango database (PostgreSQL 15), shortened.
# pg_restore ends a line with the owner: empty (a space) for an extension and its comment.
LISTING = "\n".join([
    ";",
    "; Archive created at 2026-12-04 17:29:41 UTC",
    ";     dbname: geo",
    ";",
    "; Selected TOC Entries:",
    ";",
    "2; 3079 128651 EXTENSION - postgis ",
    "4254; 0 0 COMMENT - EXTENSION postgis ",
    "3; 3079 130194 EXTENSION - uuid-ossp ",
    '4255; 0 0 COMMENT - EXTENSION "uuid-ossp" ',
    "221; 1259 130229 TABLE public place geo",
    "4256; 0 0 COMMENT public TABLE place geo",
    "4247; 0 130229 TABLE DATA public place geo",
    "4094; 0 129004 TABLE DATA public spatial_ref_sys postgres",
    "4099; 2606 130237 CONSTRAINT public place place_pkey geo",
    "",
])  # fmt: skip


def installed(**changes: object) -> extensions.Installed:
    """A copy of a template with postgis (a superuser's), and uuid-ossp made by the role."""
    fields = {
        "template": "geo_template",
        "role": "geo",
        "present": frozenset({"plpgsql", "postgis", "uuid-ossp"}),
        "foreign": ("plpgsql", "postgis"),
        "closed": (),
        "creatable": {"postgis": False, "pgcrypto": True, "uuid-ossp": True},
        **changes,
    }
    return extensions.Installed(**fields)


def ids(listing: str) -> list[str]:
    return [line.split(";")[0] for line in listing.splitlines() if not line.startswith(";")]


def test_comments_on_extensions_the_role_does_not_own_are_left_out():
    edited = installed().edit(LISTING)

    assert ids(edited) == ["2", "3", "4255", "221", "4256", "4247", "4094", "4099"]
    assert edited.startswith(";\n; Archive created") and edited.endswith("\n")


def test_an_empty_database_keeps_everything_of_extensions_the_role_may_create():
    empty = installed(template=None, present=frozenset({"plpgsql"}), foreign=("plpgsql",))
    trusted = LISTING.replace("postgis", "pgcrypto")
    assert ids(empty.edit(trusted)) == ids(LISTING)


def test_an_extension_only_a_superuser_can_create_is_refused_naming_the_setting():
    empty = installed(template=None, present=frozenset({"plpgsql"}), foreign=("plpgsql",))

    with pytest.raises(ExtensionUnavailable) as raised:
        empty.edit(LISTING)

    message = str(raised.value)
    assert "extension(s) postgis, which only a superuser can create" in message
    assert "PGCLONE_TEMPLATE_DATABASE is not set" in message
    assert "set PGCLONE_TEMPLATE_DATABASE to its name" in message
    assert isinstance(raised.value, ConfigurationError)


def test_a_template_without_the_extensions_is_named_with_what_creates_them():
    without = installed(
        present=frozenset({"plpgsql"}),
        foreign=("plpgsql",),
        creatable={"postgis": False, "uuid-ossp": False},
    )

    with pytest.raises(ExtensionUnavailable) as raised:
        without.edit(LISTING)

    assert "run CREATE EXTENSION postgis; CREATE EXTENSION \"uuid-ossp\" in 'geo_template'" in (
        str(raised.value)
    )


def test_an_extension_the_server_lacks_is_refused():
    with pytest.raises(ExtensionUnavailable, match=r"uuid-ossp, which the database server does"):
        installed(present=frozenset({"postgis"}), creatable={"postgis": False}).edit(LISTING)


def test_rows_of_a_configuration_table_the_role_may_not_write_are_refused_with_the_grant():
    closed = installed(closed=(("public", "spatial_ref_sys", "postgis", False),))

    with pytest.raises(ExtensionUnavailable) as raised:
        closed.edit(LISTING)

    message = str(raised.value)
    assert "rows of public.spatial_ref_sys, configuration of the extension(s) postgis" in message
    assert "GRANT INSERT ON public.spatial_ref_sys TO pg_database_owner" in message
    assert "'geo' may not write" in message


@pytest.mark.parametrize(
    ("value", "fine"),
    [(None, True), ("geo_template", True), ({"default": "t", "other": None}, True),
     (["t"], False), ({"default": 1}, False)],
)  # fmt: skip
def test_the_setting_is_a_name_or_names_by_alias(value, fine):
    assert (extensions.setting_problem(value) is None) is fine


def test_the_list_is_read_from_an_inherited_descriptor():
    argv = ["pg_restore", "--no-password", "--dbname=x", "/tmp/dump"]
    assert restore_lists.with_list(argv, 7) == [
        "pg_restore", "--use-list=/dev/fd/7", "--no-password", "--dbname=x", "/tmp/dump",
    ]  # fmt: skip
