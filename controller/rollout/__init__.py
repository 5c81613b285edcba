"""Applying a planned change to the engine: the apply sequence once, with each mode's swap, gate and undo.

``base`` holds what both modes share — pull, refuse a foreign journal or
runtime, snapshot, journal, swap, health gate, undo, finish — and the two
modes supply their own steps: ``container`` (one container, renamed and
swapped) and ``swarm`` (a one-replica service updated stop-first).
"""
