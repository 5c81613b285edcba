"""Desired vs actual → what to do: nothing, create, replace or repair drift.

A pure function, tested by equality.  ``replace`` is a deployment (the
manifest changed since the container was created); ``repair`` is drift (someone or
something changed, stopped or removed the container behind our back).  A
container at our name that we did not create is not adopted silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from controller.errors import Reason, Refused
from controller.model.containers import ContainerState
from controller.model.desired import (
    LABEL_ENVIRONMENT,
    LABEL_MANAGED_BY,
    LABEL_MANIFEST,
    DesiredContainer,
    keep_reference,
)
from controller.untrusted import bounded

Action = Literal["nothing", "create", "replace", "repair"]


@dataclass(frozen=True)
class Plan:
    """What apply will do, and why."""

    action: Action
    reason: str
    drift: tuple[str, ...] = ()


def differences(desired: DesiredContainer, actual: ContainerState) -> tuple[str, ...]:
    """The settings in which ``actual`` departs from ``desired`` (revision labels aside)."""
    checks = [
        ("image", actual.image in (desired.image, keep_reference(desired.image, desired.labels[LABEL_ENVIRONMENT]))),
        ("env", actual.env == desired.env),
        ("mounts", set(actual.mounts) == set(desired.mounts)),
        (
            "labels",
            all(actual.labels.get(k) == desired.labels[k] for k in (LABEL_ENVIRONMENT, LABEL_MANAGED_BY)),
        ),
        ("restart policy", actual.restart_policy == desired.restart_policy),
        ("init", actual.init == desired.init),
        ("network", actual.network_mode == desired.network_mode),
        ("placement", actual.placed),
    ]
    return tuple(name for name, same in checks if not same) + widening(actual)


IPC_DEFAULTS = frozenset({"", "private", "shareable", "none"})  # the engine's defaults, and "none" narrows


def widening(actual: ContainerState) -> tuple[str, ...]:
    """Each setting of ``actual`` that lets the runtime do more than the controller gives it, as people read it.

    The controller creates the runtime with none of these (docs/design.md §3), so any one is drift, named
    with its value: "pid mode host", "capabilities SYS_ADMIN", "devices /dev/mem".
    """
    p = actual.privileges
    modes = [("pid", p.pid_mode), ("uts", p.uts_mode), ("userns", p.userns_mode)]
    found = [f"{name} mode {mode}" for name, mode in modes if mode]
    if p.ipc_mode not in IPC_DEFAULTS:
        found.append(f"ipc mode {p.ipc_mode}")
    for name, values in (
        ("capabilities", p.cap_add),
        ("devices", p.devices),
        ("security options", p.security_opt),
        ("mounts", p.extra_mounts),
    ):
        if values:
            found.append(f"{name} {', '.join(values)}")
    if p.user:
        found.append(f"user {p.user}")
    if actual.privileged:
        found.append("privileged")
    if actual.published_ports:
        found.append("published ports")
    if actual.replicas != 1:  # two runtimes on one database and one set of folders
        found.append("global mode" if actual.replicas is None else f"replicas {actual.replicas}")
    return tuple(bounded(item, limit=120) for item in found)


def plan(desired: DesiredContainer, actual: ContainerState | None, *, deployed: bool, adopt: bool = False) -> Plan:
    """Decide the action.  ``deployed``: this controller has applied a revision to this environment before."""
    if actual is None:
        if not deployed:
            return Plan("create", "no runtime container exists yet")
        return Plan("repair", "the runtime container was removed", ("removed",))
    if not actual.managed:
        if not deployed and not adopt:
            raise Refused(
                f"container {actual.name} exists but was not created by the controller; "
                "remove it or pass --adopt to replace it",
                code=Reason.NOT_MANAGED,
            )
        return Plan("repair", "the container at the runtime's name is not managed by the controller", ("unmanaged",))
    drift = differences(desired, actual)
    if drift and actual.labels.get(LABEL_MANIFEST) != desired.labels[LABEL_MANIFEST]:
        return Plan("replace", f"deploying {desired.image}", drift)
    if drift:
        return Plan("repair", f"drift in {', '.join(drift)}", drift)
    if not actual.running:
        return Plan("repair", f"the runtime container is {actual.status}", ("stopped",))
    return Plan("nothing", "the runtime container matches the manifest")
