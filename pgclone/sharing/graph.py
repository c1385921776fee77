"""The subset's foreign-key graph, apart from its SQL: which kind each table is
(see :mod:`pgclone.sharing.subset`), which foreign keys choose a table's rows
and which bring the rows they reference, which tables are leaves, and in what
order the fixed point's statements run. Pure functions of the catalog's
foreign keys (and references followed as nullable ones), unit-tested without a database."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

KINDS = ("root", "down", "up", "filtered")


class Edge(Protocol):
    """What the graph reads of a foreign key (pgclone.pg.catalog.ForeignKey) or
    of a reference followed as one (pgclone.sharing.relations.Reference)."""

    child: int
    parent: int
    nullable: bool


class Statement(Protocol):
    """What the graph reads of one statement of the fixed point."""

    inputs: tuple[int, ...]
    output: int
    seed: Any


S = TypeVar("S", bound=Statement)


def classify(fks: list[Edge], roots: set[int]) -> dict[int, str]:
    """Each table connected to a root, with its kind (see the module's docstring)."""
    down = closure(roots, [fk for fk in fks if not fk.nullable], upward=False)
    up = closure(down, fks, upward=True) - down
    filtered = closure(down | up, fks, upward=False) - down - up
    kinds = {oid: "filtered" for oid in filtered}
    kinds.update({oid: "up" for oid in up})
    kinds.update({oid: "down" for oid in down})
    kinds.update({oid: "root" for oid in roots})
    return kinds


def closure(start: set[int], fks: list[Edge], *, upward: bool) -> set[int]:
    found = set(start)
    changed = True
    while changed:
        changed = False
        for fk in fks:
            source, target = (fk.child, fk.parent) if upward else (fk.parent, fk.child)
            if source in found and target not in found:
                found.add(target)
                changed = True
    return found


def filters(fks: list[Edge], kinds: dict[int, str], oid: int) -> list:
    """The foreign keys that choose a down or filtered table's rows: a row is kept
    when what each of them references is kept."""
    kind = kinds[oid]
    into = {"down": ("root", "down"), "filtered": KINDS}.get(kind, ())
    return [
        fk
        for fk in fks
        if fk.child == oid
        and kinds.get(fk.parent) in into
        and (kind == "filtered" or not fk.nullable)  # down: a nullable one pulls instead
    ]


def pulls(fks: list[Edge], kinds: dict[int, str]) -> list:
    """The foreign keys along which kept rows bring the rows they reference.

    Along a down table's own filter the rows referenced are kept already, unless
    other rows enter that table (pulled there, or as a root's): such pulls are
    left out, to the fixed point of what that leaves pulled.
    """
    pulls = [fk for fk in fks if kinds.get(fk.child) in ("root", "down", "up")]
    while True:
        entered = {fk.parent for fk in pulls} | {oid for oid, k in kinds.items() if k == "root"}
        needed = [
            fk for fk in pulls if fk.child in entered or fk not in filters(fks, kinds, fk.child)
        ]
        if needed == pulls:
            return pulls
        pulls = needed


def leaves(steps: list[S], kinds: dict[int, str], read: set[int] = frozenset()) -> dict[int, S]:
    """The down and filtered tables whose kept rows nothing else needs (no step
    reads them, nor what is written of the tables ``read`` reads, none but
    their own seed adds to them: order items that pull nothing, a customer's
    events), with the condition that keeps their rows.

    Their rows are chosen as they are written, by that condition: one pass over
    the table, where keeping them first would take two and an insert.
    """
    read = {*read, *(oid for step in steps for oid in step.inputs)}
    seeds = {step.output: step for step in steps if step.seed is not None}
    return {
        oid: seed
        for oid, seed in seeds.items()
        if kinds[oid] in ("down", "filtered")
        and oid not in read
        and sum(step.output == oid for step in steps) == 1
    }


def ordered(steps: list[S]) -> tuple[S, ...]:
    """The steps, each after those that add to its inputs where the graph allows
    (in a cycle, the first left goes first): the first round then finds most rows."""
    ordered: list[S] = []
    pending = list(steps)
    while pending:
        ready = [
            step
            for step in pending
            if not any(other is not step and other.output in step.inputs for other in pending)
        ]
        ordered.append((ready or pending)[0])
        pending.remove(ordered[-1])
    return tuple(ordered)
