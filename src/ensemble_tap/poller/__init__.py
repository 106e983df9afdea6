"""The polling engine: targets, one poll cycle, scheduling, status.

Providers that offer no usable webhooks are polled: each poll *target* (one provider
configuration after tenant merging) gets its own scheduler, checkpoint scope and status entry.
A cycle walks the target's *streams* (one per object, plus delete scans), diffs every record
against its stored snapshot and publishes created / updated / deleted CloudEvents through the
same publisher as webhooks. The provider-specific requests live in ``providers/<name>.py``.
"""
