"""An MCP 'server' that reads stdin and never answers; it exits when stdin closes."""

import sys

for _line in sys.stdin:
    pass
