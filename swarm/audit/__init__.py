"""The audit trail of memory files: who wrote each line and when (blame), each file's edits in
order (log), and rollback to an earlier moment. Read from a node's store; the facts themselves
travel inside the documents (swarm/memory/stamps.py)."""
