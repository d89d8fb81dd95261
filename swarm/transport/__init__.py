"""Transports move envelopes between nodes: the protocol, an in-memory bus, and Redis."""

from swarm.transport.base import Message, Transport, TransportError, gap_marker, is_gap_marker

__all__ = ["Message", "Transport", "TransportError", "gap_marker", "is_gap_marker"]
