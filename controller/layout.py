"""Creating an environment's host layout (``dreichor-controller init``).

Idempotent and conservative: folders are created with the modes DESIGN §4
asks for, files are written only when absent, so running ``init`` again on a
live host changes nothing an operator edited.
"""

from __future__ import annotations

from pathlib import Path

from controller.config import API_PORTS, DEFAULT_REPOSITORY, HostPaths
from controller.files import create_new

STARTER_CONFIG = """\
# Dreichor deploy controller for {environment}. Keys: see DESIGN §5 / README.
environment: {environment}
root: {root}
source:
  url: https://github.com/ceerkle/dreichor-deployments.git
  branch: main
  interval: 60
trust:
  allowed_signers: trust/allowed_signers
  mode: first-parent
image:
  repository: {repository}
docker:
  url: unix:///var/run/docker.sock
api:
  listen: 127.0.0.1:{port}
health:
  timeout: 60
  stable: 10
"""

STARTER_DOTENV = """\
# Secrets for the {environment} controller. Only DATABASE_URL reaches the runtime container.
# DATABASE_URL=postgresql://dreichor@127.0.0.1:5432/dreichor_{environment}
"""


def init_layout(root: Path, environment: str) -> list[Path]:
    """Create the layout for ``environment`` under ``root``; return the paths it created."""
    paths = HostPaths(root, environment)
    created: list[Path] = []
    folders = [
        (paths.agent_dir, 0o755),
        (paths.trust_dir, 0o755),
        (paths.state, 0o700),
        (paths.snapshots, 0o700),
        (paths.audit_events, 0o755),
        (paths.runtime_snapshots, 0o755),
    ]
    for folder, mode in folders:
        if not folder.is_dir():
            folder.mkdir(parents=True, mode=mode)
            folder.chmod(mode)  # mkdir's mode is masked by the umask
            created.append(folder)
    files = [
        (paths.config, _config_text(root, environment), 0o644),
        (paths.dotenv, STARTER_DOTENV.format(environment=environment), 0o600),
        (paths.trust_dir / "allowed_signers", "", 0o644),
    ]
    for path, text, mode in files:
        if create_new(path, text.encode(), mode=mode):
            created.append(path)
    return created


def _config_text(root: Path, environment: str) -> str:
    return STARTER_CONFIG.format(
        environment=environment,
        root=root,
        repository=DEFAULT_REPOSITORY,
        port=API_PORTS[environment],
    )
