"""swarm: one memory for an AI agent across every engine it runs on."""

__version__ = "0.1.0"
