"""The real-component test bed: a private Docker Engine, a local registry, tiny images, signed repos.

A top-level package of the repository, not shipped in the wheel: the tests,
the benchmarks and ``scripts/demo`` import it from a checkout, as they all
build the same sandbox.  Everything
listens on 127.0.0.1 or a unix socket under a temporary folder, and nothing
touches a Docker Engine that may already run on the machine.

Split by component: ``engine`` (the private dockerd), ``registry`` (the registry and images),
``keys`` (ssh and gpg keys), ``repositories`` (signed manifest repositories), ``services`` (the
outside's stand-ins), ``host`` (a controller host), ``swarm``, ``disk`` and ``chaos``; what the
tests use is importable from ``testbed`` itself.
"""

from __future__ import annotations

from testbed.common import BedError, free_port, wait_for
from testbed.engine import BUSYBOX, PrivateDocker, docker_cli, mounts_under, peak_running, unmount_under
from testbed.host import ControllerHost, history_events, page_sample
from testbed.keys import (
    GpgKey,
    SshKey,
    drop_signing_usage,
    gnupg_home,
    gnupg_homes,
    gpg_algorithm,
    gpg_detach_sign,
    gpg_edit,
    make_gpg_key,
    make_ssh_key,
    revoke_gpg_key,
    revoke_gpg_primary,
    revoke_gpg_subkey,
    ssh_fingerprint,
    ssh_sign,
    stop_gpg_agents,
    with_signature,
)
from testbed.registry import IMAGE_VARIANTS, REPOSITORY_PATH, LocalRegistry, build_images
from testbed.repositories import ManifestRepo, manifest_text
from testbed.services import CuttingProxy, JwksServer, NotificationReceiver, ReceivedRequest

__all__ = [
    "BUSYBOX",
    "IMAGE_VARIANTS",
    "REPOSITORY_PATH",
    "BedError",
    "ControllerHost",
    "CuttingProxy",
    "GpgKey",
    "JwksServer",
    "LocalRegistry",
    "ManifestRepo",
    "NotificationReceiver",
    "PrivateDocker",
    "ReceivedRequest",
    "SshKey",
    "build_images",
    "docker_cli",
    "drop_signing_usage",
    "free_port",
    "gnupg_home",
    "gnupg_homes",
    "gpg_algorithm",
    "gpg_detach_sign",
    "gpg_edit",
    "history_events",
    "make_gpg_key",
    "make_ssh_key",
    "manifest_text",
    "mounts_under",
    "page_sample",
    "peak_running",
    "revoke_gpg_key",
    "revoke_gpg_primary",
    "revoke_gpg_subkey",
    "ssh_fingerprint",
    "ssh_sign",
    "stop_gpg_agents",
    "unmount_under",
    "wait_for",
    "with_signature",
]
