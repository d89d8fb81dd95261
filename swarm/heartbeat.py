"""What a node tells the swarm about itself each heartbeat: one schema, written by replication and
read by `swarm status` (and the bench), so the two never disagree on a field.

Writing builds the models from the node's own state. Reading is lenient, field by field: a
heartbeat comes from another node (maybe another version, maybe hostile), and a malformed part
must cost only that part (its default), never the whole status.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    WrapValidator,
)
from pydantic_core import PydanticUseDefault

from swarm.memory import vector
from swarm.memory.vector import StateVector


def _default_if_invalid(value: Any, handler: Any) -> Any:
    try:
        return handler(value)
    except ValidationError:
        raise PydanticUseDefault() from None


Lenient = WrapValidator(_default_if_invalid)


def _text_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


TextMap = Annotated[dict[str, str], WrapValidator(lambda value, _handler: _text_map(value))]
Truthy = Annotated[bool, WrapValidator(lambda value, _handler: bool(value))]


class FileFacts(BaseModel):
    """Per-file heartbeat facts: stored apart from the summary, rewritten only when they change."""

    model_config = ConfigDict(frozen=True)

    sv: str  # base64 of the document's state vector
    digest: Annotated[str, Lenient] = ""  # of the state vector: equal digests, equal states
    size: Annotated[StrictInt | None, Lenient] = None  # bytes of the content
    hash: Annotated[str | None, Lenient] = None  # of the content: the bytes each disk should hold
    exists: Truthy = True
    pending: Annotated[StrictBool, Lenient] = False  # waiting for operations it depends on
    changed: Annotated[StrictFloat | None, Lenient] = None  # when this node last changed it itself

    def state_vector(self) -> StateVector:
        """The decoded state vector; ValueError when it is not one."""
        try:
            return vector.decode(base64.b64decode(self.sv, validate=True))
        except (TypeError, binascii.Error) as exc:
            raise ValueError(str(exc)) from None

    @property
    def changed_at(self) -> float | None:
        changed = self.changed
        return changed if changed is not None and changed > 0 else None


class DiskEntry(BaseModel):
    """A file whose disk does not hold its document (swarm.file_health)."""

    state: Annotated[str, Lenient] = ""  # "error" or "pending"
    reason: Annotated[str, Lenient] = ""
    for_s: Annotated[StrictFloat, Lenient] = 0.0


class Heartbeat(BaseModel):
    """A node's summary; `files` is the per-file part (swarm.transport stores it apart)."""

    role: Annotated[str, Lenient] = ""
    host: Annotated[str, Lenient] = ""
    pid: Annotated[StrictInt | None, Lenient] = None
    started: Annotated[StrictFloat, Lenient] = 0.0
    ready: Annotated[StrictBool, Lenient] = False
    outbox: Annotated[StrictInt, Lenient] = 0
    cursor: Annotated[str, Lenient] = "0-0"
    lag: Annotated[StrictInt, Lenient] = 0
    last_error: Annotated[str | None, Lenient] = None
    problems: TextMap = {}  # cause -> message (Redis, the swarm key)
    skipped: TextMap = {}  # path -> why this node does not sync it
    deletions_held: Annotated[str | None, Lenient] = None
    files_held: Annotated[dict[str, Any] | None, Lenient] = None  # swarm.flood
    disk: Annotated[dict[str, Any], Lenient] = {}  # path -> DiskEntry, read by `disk_entries`
    refused: TextMap = {}  # paths seen from peers that its policy never syncs
    # changes of protected files it refused (swarm/protect/), read by `protected_refusals`
    protected_refused: Annotated[list[Any], Lenient] = []
    not_synced: Annotated[dict[str, Any], Lenient] = {}  # bridge/survey.py's report
    files_digest: Annotated[str, Lenient] = ""  # of every file's state vector
    files: Annotated[dict[str, Any], Lenient] = {}  # path -> FileFacts, read by `file_facts`

    @classmethod
    def read(cls, info: dict[str, Any]) -> Heartbeat:
        """A heartbeat as received: every malformed field at its default."""
        return cls.model_validate(info if isinstance(info, dict) else {})

    def file_facts(self) -> dict[str, FileFacts]:
        """The per-file facts; an entry without a readable state vector is left out."""
        facts: dict[str, FileFacts] = {}
        for path, entry in self.files.items():
            try:
                fact = FileFacts.model_validate(entry)
                fact.state_vector()
            except (ValidationError, ValueError):
                continue
            facts[path] = fact
        return facts

    def disk_entries(self) -> dict[str, DiskEntry]:
        return {
            path: DiskEntry.model_validate(entry)
            for path, entry in self.disk.items()
            if isinstance(entry, dict)
        }

    @property
    def held(self) -> bool:
        """An operator must act: deletions or new files held."""
        return bool(self.deletions_held or self.files_held)

    def summary(self) -> dict[str, Any]:
        """The JSON a node writes (its per-file facts included under `files`)."""
        return self.model_dump()
