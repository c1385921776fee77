"""What a job was asked to do, and a dump's manifest: typed, versioned records.

A job keeps its options as JSON (``Job.options``) and a dump its manifest as a
JSON file beside it; these classes are how code reads and writes them, so that
a field is named in one place. Each has an explicit ``to_dict`` / ``from_dict``
and a ``version``: a record written before versions existed reads as version
1, and fields a reader doesn't know are kept as they were (a manifest's
signature covers them all).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

VERSION = 1


def _known(cls: type, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` split into the fields of ``cls`` and the rest."""
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    return (
        {k: v for k, v in data.items() if k in names},
        {k: v for k, v in data.items() if k not in names},
    )


@dataclass(frozen=True)
class Source:
    """Where a restore's data comes from: a dump in storage, or a database on the server."""

    type: str  # "dump" or "database"
    label: str  # as the user wrote it: a key, a database name, :previous, :NAME
    key: str = ""  # the dump's key, for "dump"
    name: str = ""  # the database's name, for "database"

    @property
    def is_dump(self) -> bool:
        return self.type == "dump"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v or k in ("type", "label")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Source:
        known, _ = _known(cls, data)
        return cls(**known)


@dataclass(frozen=True)
class DumpOptions:
    """A dump job's resolved options."""

    config: str = ""
    database: str = ""  # the alias
    database_name: str = ""
    exclude_models: tuple[str, ...] = ()
    pre_dump_hooks: tuple[str, ...] = ()
    storage_location: str = ""
    encryption_recipients: tuple[str, ...] = ()  # age public keys; none: not encrypted
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in ("exclude_models", "pre_dump_hooks", "encryption_recipients"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DumpOptions:
        known, _ = _known(cls, data)  # "requested" (what was asked, as asked) stays in the job
        for name in ("exclude_models", "pre_dump_hooks", "encryption_recipients"):
            known[name] = tuple(known.get(name) or ())
        return cls(**known)


@dataclass(frozen=True)
class RestoreOptions:
    """A restore job's resolved options."""

    config: str = ""
    database: str = ""  # the alias
    database_name: str = ""
    pre_swap_hooks: tuple[str, ...] = ()
    reversible: bool = False
    source: Source | None = None
    require_scrubbed: bool = False  # refuse a dump whose manifest does not say "scrubbed"
    storage_location: str = ""
    keep_copy: bool = False  # keep a copy of the loaded dump once the job succeeded
    create_missing: bool = False  # create the alias's database if it does not exist
    copy_to: str = ""  # `copy KEY NEWNAME`: the new database; no hooks, no swap
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["pre_swap_hooks"] = list(self.pre_swap_hooks)
        data["source"] = self.source.to_dict() if self.source else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestoreOptions:
        known, _ = _known(cls, data)
        known["pre_swap_hooks"] = tuple(known.get("pre_swap_hooks") or ())
        source = known.get("source")
        known["source"] = Source.from_dict(source) if source else None
        return cls(**known)


@dataclass(frozen=True)
class Manifest:
    """What is recorded beside a dump when it is complete (its commit marker)."""

    key: str
    database: str
    config: str
    created: str
    size: int  # bytes stored
    sha256: str  # of the bytes stored
    raw_size: int | None = None  # bytes of the archive, uncompressed
    compression: str = "zstd"
    format: str = "postgresql-custom"
    exclude_models: tuple[str, ...] = ()
    excluded_tables: tuple[str, ...] = ()
    # Each table and its rows, as the dump's snapshot saw them (TableCount.to_dict);
    # None in dumps made before pgclone recorded them.
    tables: list[dict[str, Any]] | None = None
    pg_dump_version: str = ""
    server_version: str = ""
    pgclone_version: str = ""
    job_id: str = ""
    signature: str | None = None
    signing_key_id: str | None = None  # names the key that signed it (signing.key_id)
    # An encrypted dump: {"method": "age", "recipients": [public keys]}; None when plain.
    encryption: dict[str, Any] | None = None
    plaintext_sha256: str | None = None  # of the zstd stream age encrypted
    # A container's pre-data archive (the SQL that creates its tables, functions…):
    # checked before it runs, as a dump read from S3 is checked whole only at its end.
    pre_data_sha256: str | None = None
    # A planned dump (format pgclone-plan-2, or -1 before): what its config did to the data, and
    # its plan ({"digest", "scrub_key_id", "tables", "rows"}; never the key).
    scrubbed: bool = False
    subset: bool = False
    plan: dict[str, Any] | None = None
    # A scrubbed dump's leak proof: {"sample", "columns", "result"}; None before it was made.
    leak_proof: dict[str, Any] | None = None
    # The accounts of the user table the dump holds that could sign in to the admin:
    # {"table", "condition", "count", "unusable_password"} (counts None: not counted);
    # None in a project without django.contrib.auth and in dumps made before it was counted.
    accounts: dict[str, Any] | None = None
    version: int = VERSION
    # Fields this version doesn't know (a newer pgclone's): kept, and signed, as they are.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def signed(self) -> bool:
        """It carries a signature: whether it checks is ``signing.examine``'s to say."""
        return bool(self.signature)

    @property
    def encrypted(self) -> bool:
        return bool(self.encryption)

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple((self.encryption or {}).get("recipients") or ())

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        data["exclude_models"] = list(self.exclude_models)
        data["excluded_tables"] = list(self.excluded_tables)
        optional = ("signature", "signing_key_id", "raw_size", "tables", "encryption")
        later = ("plaintext_sha256", "plan", "leak_proof", "accounts", "pre_data_sha256")
        for name in (*optional, *later):
            if data[name] is None:
                del data[name]  # as manifests without them were written
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known, extra = _known(cls, data)
        known.setdefault("version", 1)  # written before versions existed
        for name in ("exclude_models", "excluded_tables"):
            known[name] = tuple(known.get(name) or ())
        for name in ("key", "database", "config", "created"):
            known.setdefault(name, "")
        return cls(**known, extra=extra)


def counts_as_scrubbed(manifest: Manifest | dict[str, Any]) -> bool:
    """Whether a dump's manifest shows scrubbed data: it says ``"scrubbed": true``
    and its plan names a table that pgclone wrote. ``"scrub": {}`` in a config
    made manifests saying "scrubbed" with no table changed: those don't count.
    Whether the manifest can be trusted (its signature) is for the caller to check."""
    if isinstance(manifest, Manifest):
        scrubbed, plan = manifest.scrubbed, manifest.plan
    else:
        scrubbed, plan = manifest.get("scrubbed"), manifest.get("plan")
    tables = plan.get("tables") if isinstance(plan, dict) else None
    return scrubbed is True and isinstance(tables, list) and bool(tables)


def dump_options(job: Any) -> DumpOptions:
    return DumpOptions.from_dict(job.options)


def restore_options(job: Any) -> RestoreOptions:
    return RestoreOptions.from_dict(job.options)


def manifest_of(job: Any) -> Manifest:
    """The manifest a dump job wrote, or the one a restore job read."""
    return Manifest.from_dict(job.result["manifest"])
