"""The exact-match response cache: the key of a request (key.py), where answers live (store.py) and how a hit
is replayed as a stream (replay.py). The faces decide when to look up and store; nothing here knows HTTP."""
