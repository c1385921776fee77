"""Reading an archive's table of contents and schema (as pg_restore 15 prints
them) for the foreign keys a restore could not re-create."""

from __future__ import annotations

import pytest

from pgclone import verifying
from pgclone.exceptions import DumpDamaged
from pgclone.pg import postgres
from pgclone.storage import keys

# pg_dump --exclude-table-data=secret of a database holding a table in a
# schema whose names need quoting, a NOT VALID foreign key, a partitioned table
# and a partitioned table with no partition.
LISTING = """\
;
; Archive created at 2026-11-25 16:40:30 UTC
;
216; 1259 44503 TABLE Odd Schema Note "X" postgres
220; 1259 44539 TABLE public empty_parted postgres
217; 1259 44513 TABLE public nv postgres
218; 1259 44521 TABLE public parted postgres
219; 1259 44531 TABLE public parted_1 postgres
221; 1259 44544 TABLE public refs_empty postgres
215; 1259 44497 TABLE public secret postgres
3221; 0 0 TABLE ATTACH public parted_1 postgres
3379; 0 44503 TABLE DATA Odd Schema Note "X" postgres
3380; 0 44513 TABLE DATA public nv postgres
3381; 0 44531 TABLE DATA public parted_1 postgres
3382; 0 44544 TABLE DATA public refs_empty postgres
3233; 2606 44508 FK CONSTRAINT Odd Schema Note "X" fk "odd" postgres
3234; 2606 44516 FK CONSTRAINT public nv nv_fk postgres
3235; 2606 44526 FK CONSTRAINT public parted parted_s_fkey postgres
3236; 2606 44547 FK CONSTRAINT public refs_empty refs_empty_e_fkey postgres
"""
SCHEMA = '''\
CREATE TABLE "Odd Schema"."Note ""X""" (
    id integer NOT NULL,
    s integer
);
CREATE TABLE public.empty_parted (
    id integer NOT NULL
)
PARTITION BY LIST (id);
CREATE TABLE public.nv (
    s integer
);
CREATE TABLE public.parted (
    id integer NOT NULL,
    s integer
)
PARTITION BY RANGE (id);
CREATE TABLE public.parted_1 (
    id integer NOT NULL,
    s integer
);
CREATE TABLE public.secret (
    id integer NOT NULL
);
ALTER TABLE ONLY public.parted ATTACH PARTITION public.parted_1 FOR VALUES FROM (0) TO (10);
ALTER TABLE ONLY public.secret
    ADD CONSTRAINT secret_pkey PRIMARY KEY (id);
ALTER TABLE ONLY "Odd Schema"."Note ""X"""
    ADD CONSTRAINT "fk ""odd""" FOREIGN KEY (s) REFERENCES public.secret(id);
ALTER TABLE ONLY public.nv
    ADD CONSTRAINT nv_fk FOREIGN KEY (s) REFERENCES public.secret(id) NOT VALID;
ALTER TABLE public.parted
    ADD CONSTRAINT parted_s_fkey FOREIGN KEY (s) REFERENCES public.secret(id);
ALTER TABLE ONLY public.refs_empty
    ADD CONSTRAINT refs_empty_e_fkey FOREIGN KEY (e) REFERENCES public.empty_parted(id);
'''


def test_foreign_keys_are_read_with_their_quoted_names():
    found = {fk.name: fk for fk in verifying.foreign_keys(SCHEMA)}
    assert sorted(found) == ['fk "odd"', "parted_s_fkey", "refs_empty_e_fkey"]  # not NOT VALID
    assert found['fk "odd"'].table == ("Odd Schema", 'Note "X"')
    assert found['fk "odd"'].referenced == ("public", "secret")


def test_only_foreign_keys_to_rows_left_out_from_rows_kept_are_unrestorable():
    broken = verifying.unrestorable_foreign_keys(LISTING, SCHEMA)
    # A partitioned table's rows are its partitions'; one without partitions has none.
    assert [fk.name for fk in broken] == ['fk "odd"', "parted_s_fkey"]


def test_the_message_names_the_constraint_and_both_tables():
    key = keys.parse_key("shop/20261125T164030.961037Z.old.dump")
    with pytest.raises(DumpDamaged) as caught:
        verifying.check_restorable(key, LISTING, SCHEMA)
    assert (
        '- foreign key "fk ""odd""" of "Odd Schema"."Note ""X""" references public.secret, '
        'whose rows are not in the dump while those of "Odd Schema"."Note ""X""" are: a '
        'restore would fail re-creating it unless "Odd Schema"."Note ""X""" is empty.'
    ) in str(caught.value)


def test_archive_entries_leave_out_comments():
    assert verifying.archive_entries(LISTING) == 16


def test_tables_outside_the_search_path_are_qualified_quoted_patterns():
    argv = postgres.pg_dump_argv(
        postgres.ConnInfo(name="db"),
        exclude_table_data=[("Odd Schema", 'Note "X"'), ("public", "raw")],
    )
    assert '--exclude-table-data="Odd Schema"."Note ""X"""' in argv
    assert '--exclude-table-data="public"."raw"' in argv
