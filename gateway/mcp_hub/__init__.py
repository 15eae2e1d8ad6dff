"""The MCP hub: the gateway's built-in MCP servers served to MCP clients at /mcp, per key and per profile.

    access.py    who may use which server: the scope's profiles, the servers' scopes, the key's allow-list
    catalog.py   the tools a caller sees, namespaced with the tool loop's naming rule, and how a call is served
    metering.py  each tools/call against the key's rpm, with its usage row (and per-tool price)
    server.py    the SDK's low-level Server and its stateless streamable-HTTP session manager, per worker
    asgi.py      the WSGI -> ASGI shim: one request driven on the worker's MCP bridge loop, streamed back
    views.py     the Flask routes: /mcp, /mcp/{scope}/{profile}, the OAuth protected-resource metadata
"""
