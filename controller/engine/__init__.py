"""The Docker Engine behind a port of our own: the port's Protocols and value types, and its two adapters.

``port`` says what a rollout may ask of an engine; ``docker`` answers it for
one container, ``swarm`` for a one-replica Swarm service; ``modes`` keeps the
two modes from running the runtime at once; ``errors`` words an unreachable
engine the same way for both.  Only this package imports the Docker SDK.
"""
