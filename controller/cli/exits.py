"""The command line's exit codes, once: the constants, what a pass's result or a plan exits with.

docs/design.md §7 lists them per command; ``tests/unit/test_docs.py`` checks each command's
``--help`` and that table against each other.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_ROLLED_BACK = 4
EXIT_WAITING = 5  # held for approvals (docs/design.md §15): no refusal
EXIT_CHANGE = 2  # plan --exit-code: a change would be applied (as ``terraform plan -detailed-exitcode``)
EXIT_OUT_OF_SYNC = 3  # status --check
EXIT_UNHEALTHY = 4  # status --check

SYNC_EXIT = {
    "applied": EXIT_OK,
    "unchanged": EXIT_OK,
    "suspended": EXIT_OK,
    "refused": EXIT_REFUSED,
    "rolled_back": EXIT_ROLLED_BACK,
    "waiting": EXIT_WAITING,
}

PLAN_EXIT = {
    "applied": EXIT_OK,
    "unchanged": EXIT_OK,
    "suspended": EXIT_OK,
    "waiting": EXIT_OK,
    "refused": EXIT_REFUSED,
}
