"""Fault injection: upstream, MCP and infrastructure failures, each checked from the client, the rows and the balance."""
