"""What agents call to use their memory directly: the MCP server (`swarm mcp`), `swarm remember`,
and the service both share (reads from the folder, edits through the daemon's control socket or,
with no daemon running, straight into the file)."""
