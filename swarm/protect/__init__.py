"""Guarded identity and safety files: only listed writers, by their Ed25519 keys, may change them
(swarm/protect/guard.py); each node's signing key lives in its state folder (keys.py)."""
