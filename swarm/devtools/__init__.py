"""Tools for demos and tests: the in-process bus, a private redis-server, the demo."""
