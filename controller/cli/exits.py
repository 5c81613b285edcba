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
STATUS_SILENT_INTERVALS = 3  # status --check: older than this many poll intervals, no controller writes it

SYNC_EXIT = {
    "applied": EXIT_OK,
    "unchanged": EXIT_OK,
    "suspended": EXIT_REFUSED,  # held by a person: the head's content does not run (docs/design.md §16)
    "refused": EXIT_REFUSED,
    "rolled_back": EXIT_ROLLED_BACK,
    "waiting": EXIT_WAITING,
}

PLAN_EXIT = {
    "applied": EXIT_OK,
    "unchanged": EXIT_OK,
    "suspended": EXIT_OK,
    "waiting": EXIT_OK,  # --exit-code: 5, the same code as sync's for what the next pass would do
    "refused": EXIT_REFUSED,
}

# Each command's exit codes, read by its --help (cli.parser) and checked against docs/design.md §7
# (tests/unit/test_docs.py).
ONE_SHOT = "0 done; 1 error (the config, the state folder or the Docker Engine)"
EXITS: dict[str, str] = {
    "validate": "0 valid; 3 refused; 1 the file or the config cannot be read",
    "verify": "0 trusted; 3 refused (the commit or its image); "
    "1 the repository cannot be fetched or the revision is unknown",
    "verify-image": "0 trusted; 3 refused; 1 other error (registry unreachable, no keys configured)",
    "run": "0 after SIGTERM; 1 the config is unusable or another controller holds the environment",
    "sync": "0 in sync or applied; 3 refused, or held since (refused, rolled back), or suspended; "
    "4 failed the health gate and rolled back by this pass; 5 the change waits (approvals, the deploy window); "
    "1 other error; "
    "Ctrl-C finishes the pass in flight and exits with its code",
    "plan": "0 nothing to do (or a change, without --exit-code); 2 a change would be applied, an interrupted swap "
    "finished or a runtime repaired (--exit-code); 3 refused or held; 5 the change would wait (--exit-code); "
    "1 could not plan (git or Docker unreachable); while suspended: what 'resume' would do",
    "status": "0 (with --check: in sync and healthy); 3 out of sync: refused, held, waiting, suspended (--check); "
    "4 the container is unhealthy, missing or unknown, or no controller wrote the status for three poll "
    "intervals (--check); 1 the status cannot be read (permission denied: run as root or the controller's user)",
    "history": "0; 3 the audit chain is broken (--verify); 1 the state cannot be read",
    "rollback": "0 restored; 3 the snapshot is refused (another environment, repository or database); 1 other error",
    "notify": "0 every target answered; 1 otherwise",
    "approve": "0 written; 1 error (not a clone, no key, ssh-keygen failed)",
    "approvals": "0 done; 1 error (the config, git or the trust files)",
    "suspend": ONE_SHOT,
    "resume": ONE_SHOT,
    "init": "0 created (or already complete); 1 a folder cannot be created",
    "completion": "0",
}
