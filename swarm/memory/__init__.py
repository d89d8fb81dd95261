"""The CRDT memory model: one markdown file as one pycrdt document. Knows nothing of files or
Redis."""

from swarm.memory.document import MemoryDoc, UpdateError, new_client_id

__all__ = ["MemoryDoc", "UpdateError", "new_client_id"]
