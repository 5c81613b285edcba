"""The planner, by equality: desired vs actual → nothing | create | replace | repair."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from controller.errors import Refused
from controller.model.config import HostPaths
from controller.model.containers import ContainerState, Privileges
from controller.model.desired import DesiredContainer, desired_from_bytes, keep_reference
from controller.model.plan import Plan, plan

REPO = "ghcr.io/ceerkle/dreichor-trading/runtime"
A = f"{REPO}@sha256:{'a' * 64}"
B = f"{REPO}@sha256:{'b' * 64}"
PATHS = HostPaths(Path("/opt/dreichor"), "prod")


def desired(image: str = A, **env: str) -> DesiredContainer:
    lines = [f"environment: prod\nimage: {image}\n", *(f"env:\n  {k}: '{v}'\n" for k, v in env.items())]
    return desired_from_bytes(
        "".join(lines).encode(),
        environment="prod",
        repository=REPO,
        paths=PATHS,
        dotenv={"DATABASE_URL": "postgresql://h/dreichor_prod"},
    )


def actual(spec: DesiredContainer, **changes: object) -> ContainerState:
    state = ContainerState(
        id="c1",
        name=spec.name,
        image=spec.image,
        image_id="sha256:i",
        env=dict(spec.env),
        mounts=spec.mounts,
        labels=dict(spec.labels),
        restart_policy=spec.restart_policy,
        init=True,
        network_mode="bridge",
        status="running",
        health="healthy",
        restart_count=0,
        started_at="t",
    )
    return replace(state, **changes)  # type: ignore[arg-type]


def test_nothing_when_the_container_matches() -> None:
    assert plan(desired(), actual(desired()), deployed=True) == Plan(
        "nothing", "the runtime container matches the manifest"
    )


def test_create_on_the_first_deploy() -> None:
    assert plan(desired(), None, deployed=False).action == "create"


def test_a_changed_manifest_is_a_replace() -> None:
    assert plan(desired(B), actual(desired(A)), deployed=True) == Plan("replace", f"deploying {B}", ("image",))


def test_a_changed_env_in_the_manifest_is_a_replace() -> None:
    decided = plan(desired(LOG_LEVEL="debug"), actual(desired(LOG_LEVEL="info")), deployed=True)
    assert (decided.action, decided.drift) == ("replace", ("env",))


@pytest.mark.parametrize(
    ("changes", "drift"),
    [
        ({"image": B}, ("image",)),
        ({"env": {"DATABASE_URL": "postgresql://h/dreichor_prod", "X": "1"}}, ("env",)),
        ({"mounts": ()}, ("mounts",)),
        ({"restart_policy": "no"}, ("restart policy",)),
        ({"init": False}, ("init",)),
        ({"network_mode": "host"}, ("network",)),
        ({"privileged": True}, ("privileged",)),
        ({"published_ports": True}, ("published ports",)),
        ({"privileges": Privileges(pid_mode="host")}, ("pid mode host",)),
        ({"privileges": Privileges(ipc_mode="host")}, ("ipc mode host",)),
        ({"privileges": Privileges(uts_mode="host")}, ("uts mode host",)),
        ({"privileges": Privileges(userns_mode="host")}, ("userns mode host",)),
        ({"privileges": Privileges(cap_add=("SYS_ADMIN",))}, ("capabilities SYS_ADMIN",)),
        ({"privileges": Privileges(devices=("/dev/mem",))}, ("devices /dev/mem",)),
        ({"privileges": Privileges(security_opt=("seccomp=unconfined",))}, ("security options seccomp=unconfined",)),
        ({"privileges": Privileges(user="root")}, ("user root",)),
        ({"privileges": Privileges(extra_mounts=("tmpfs /run/x",))}, ("mounts tmpfs /run/x",)),
        ({"replicas": 2}, ("replicas 2",)),
        ({"replicas": 0}, ("replicas 0",)),
        ({"replicas": None}, ("global mode",)),
    ],
)
def test_drift_under_an_unchanged_manifest_is_a_repair(changes: dict[str, object], drift: tuple[str, ...]) -> None:
    decided = plan(desired(), actual(desired(), **changes), deployed=True)
    assert (decided.action, decided.drift) == ("repair", drift)


@pytest.mark.parametrize("ipc", ["", "private", "shareable", "none"])
def test_the_engines_own_ipc_modes_are_no_drift(ipc: str) -> None:
    assert plan(desired(), actual(desired(), privileges=Privileges(ipc_mode=ipc)), deployed=True).action == "nothing"


def test_a_stopped_or_removed_container_is_repaired() -> None:
    assert plan(desired(), actual(desired(), status="exited"), deployed=True).drift == ("stopped",)
    assert plan(desired(), None, deployed=True) == Plan("repair", "the runtime container was removed", ("removed",))


def test_an_unmanaged_container_is_refused_unless_adopted_or_known() -> None:
    stranger = actual(desired(), labels={})
    with pytest.raises(Refused, match="--adopt"):
        plan(desired(), stranger, deployed=False)
    assert plan(desired(), stranger, deployed=False, adopt=True).action == "repair"
    assert plan(desired(), stranger, deployed=True).drift == ("unmanaged",)


def test_a_container_running_the_kept_copy_of_the_digest_is_not_drift() -> None:
    kept = keep_reference(A, "prod")
    assert kept == f"dreichor/keep-prod:{'a' * 64}"
    assert plan(desired(), actual(desired(), image=kept), deployed=True).action == "nothing"
    assert plan(desired(), actual(desired(), image=keep_reference(B, "prod")), deployed=True).drift == ("image",)


def test_a_swarm_spec_granting_capabilities_a_user_or_unconfined_seccomp_is_drift() -> None:
    from controller.engine.swarm import _privileges  # noqa: PLC0415 the adapter's mapping, no engine needed

    granted = _privileges(
        {"CapabilityAdd": ["NET_ADMIN"], "User": "root", "Privileges": {"Seccomp": {"Mode": "unconfined"}}}
    )
    decided = plan(desired(), actual(desired(), privileges=granted), deployed=True)
    assert decided.drift == ("capabilities NET_ADMIN", "security options seccomp=unconfined", "user root")
    assert _privileges({"Image": "x"}) == Privileges()


def test_a_swarm_spec_with_a_custom_seccomp_profile_or_selinux_label_is_drift_as_in_container_mode() -> None:
    from controller.engine.swarm import _privileges  # noqa: PLC0415 the adapter's mapping, no engine needed

    granted = _privileges(
        {"Privileges": {"Seccomp": {"Mode": "custom", "Profile": "e30="}, "SELinuxContext": {"Type": "spc_t"}}}
    )
    decided = plan(desired(), actual(desired(), privileges=granted), deployed=True)
    assert decided.drift == ("security options seccomp=custom, label=type:spc_t",)
    narrowing = {"Seccomp": {"Mode": "default"}, "AppArmor": {"Mode": "default"}, "NoNewPrivileges": True}
    assert _privileges({"Privileges": narrowing}) == Privileges()


def test_a_device_cgroup_rule_is_drift_like_a_device() -> None:
    from controller.engine.docker import _privileges  # noqa: PLC0415 the adapter's mapping, no engine needed

    granted = _privileges({}, {"DeviceCgroupRules": ["a *:* rwm"]}, image_user="")
    decided = plan(desired(), actual(desired(), privileges=granted), deployed=True)
    assert decided.drift == ("devices cgroup rule a *:* rwm",)
    assert _privileges({}, {"DeviceCgroupRules": None, "Devices": []}, image_user="") == Privileges()


def test_a_swarm_service_scaled_or_global_is_read_as_such() -> None:
    from controller.engine.swarm import _replicas  # noqa: PLC0415 the adapter's mapping, no engine needed

    assert _replicas({"Mode": {"Replicated": {"Replicas": 1}}}) == 1
    assert _replicas({"Mode": {"Replicated": {"Replicas": 2}}}) == 2
    assert _replicas({"Mode": {"Global": {}}}) is None
