"""The operator's console: server-rendered pages at ``/console`` over the admin API."""
