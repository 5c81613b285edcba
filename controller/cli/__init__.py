"""The ``dreichor-controller`` command line: argument parsing and printing, nothing else.

Every command is one call into ``EnvironmentService`` (docs/design.md §7); a command module turns
the answer into text or JSON and an exit code (``exits``).  The parser is a table (``parser``), so
the commands, their flags and their help read in one place.  ``main`` runs one command.
"""

from controller.cli.main import main

__all__ = ["main"]
