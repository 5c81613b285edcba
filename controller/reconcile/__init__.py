"""The pass: its context, its steps in order, the quarantine, the remembered revisions, and the
pure record of what a pass did (docs/design.md §9)."""
