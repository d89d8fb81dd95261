"""The daemon's HTTP endpoints on TCP (`endpoints.py`), and how the daemon serves a Starlette
app under uvicorn (`serving.py`), which the control socket (swarm/control.py) shares."""

from swarm.http.endpoints import HttpServer, node_status

__all__ = ["HttpServer", "node_status"]
