"""The environments a controller can serve, in a module that imports nothing.

The command line builds its parser from these names before it knows which
command runs; keeping them apart from the config models lets ``--version``,
``status`` and completion start without loading what they do not use.
"""

from __future__ import annotations

from typing import Literal

Environment = Literal["dev", "prod"]
ENVIRONMENTS: tuple[Environment, ...] = ("dev", "prod")
