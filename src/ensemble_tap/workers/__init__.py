"""Worker processes of ``server.workers``: see pool.py."""
