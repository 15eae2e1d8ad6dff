"""MCP runtime: the asyncio bridge thread, client connections and built-in server lifecycle."""
