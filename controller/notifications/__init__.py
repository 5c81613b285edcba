"""Telling people: what is worth telling (``policy``) and sending it (``sender``: Apprise, GitHub statuses).

A notification never delays or fails a pass: the policy is pure, and the
sender works from a bounded queue on its own thread.
"""
