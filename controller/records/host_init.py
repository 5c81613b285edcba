"""Creating an environment's host layout (``dreichor-controller init``).

Idempotent and conservative: folders are created with the modes docs/design.md §4
asks for, files are written only when absent, so running ``init`` again on a
live host changes nothing an operator edited.
"""

from __future__ import annotations

from pathlib import Path

from controller.model.config import API_PORTS, DEFAULT_REPOSITORY, DEFAULT_ROOT, HostPaths
from controller.records.files import create_new

STARTER_CONFIG = """\
# The Dreichor deploy controller for {environment}: every key, its default, and why it is there.
# Unknown keys are an error. Only environment, source.url and trust.allowed_signers are required;
# every other line below shows its default and may be deleted. Relative paths are relative to
# this file's folder.
environment: {environment}              # dev | prod: which manifest (envs/{environment}.yaml) and container
root: {root}                            # base of the host layout: <root>/<env>/deploy-agent, volumes, state
source:                                 # where the desired state comes from
  # url: ssh://git@github.com/<owner>/<repo>.git   # REQUIRED: the signed manifest repository (https, ssh, file)
  branch: main                          # the branch whose head is deployed
  interval: 60                          # seconds between polls; a webhook (POST /hooks/github) syncs at once
  timeout: 60                           # seconds a fetch may take before the pass fails and backs off
trust:                                  # who may sign it: kept on this host, never read from the repo
  allowed_signers: trust/allowed_signers   # SSH keys allowed to sign (git's allowed_signers format)
  # openpgp_keys: trust/openpgp.asc        # armored OpenPGP public keys allowed to sign (optional)
  # revoked_keys: trust/revoked_keys       # public keys never accepted, even if listed above (optional)
  mode: first-parent                    # verify every first-parent commit since the applied one; or: head
image:                                  # what a manifest may run
  repository: {repository}   # the only repository images may come from
  # signatures:                         # cosign signatures checked before the pull (optional)
  #   keys: [trust/cosign.pub]          # PEM public keys of the image signers
  #   keyless:                          # or keyless (GitHub Actions `cosign sign`): Fulcio certificate + Rekor entry
  #     trusted_root: trust/sigstore/trusted_root.json   # pinned Sigstore root, read offline (see below)
  #     identities:                     # any one may sign; issuer always exact
  #       -
  #         issuer: https://token.actions.githubusercontent.com   # the OIDC issuer named in the certificate
  #         subject: https://github.com/OWNER/REPO/.github/workflows/release.yml@refs/heads/main   # the SAN, exact
  #         # subject_regexp: 'https://github[.]com/OWNER/REPO/[.]github/workflows/release[.]yml@refs/tags/v.+'  # all
  # The trusted root is Sigstore's trusted_root.json from its TUF repository, fetched outside any pass
  # by a person: `sigstore plumbing update-trust-root` (in the controller's venv) refreshes it into
  # ~/.cache/sigstore-python/tuf/https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/trusted_root.json; copy it here
  # and again when Sigstore rotates a key. A pass never fetches it, and refuses a missing or expired one.
  # provenance:                         # a SLSA build provenance must name the digest (optional; needs keyless)
  #   source_repository: https://github.com/OWNER/REPO   # the repository the image was built from
  #   source_ref: refs/heads/main       # the ref it was built from (optional, exact)
  #   identities:                       # who may sign it; same form as keyless.identities
  #     -
  #       issuer: https://token.actions.githubusercontent.com   # exact
  #       subject_regexp: 'https://github[.]com/OWNER/REPO/.+'   # the whole SAN
docker:                                 # where it runs
  url: unix:///var/run/docker.sock      # the Docker Engine (access to it equals root on this host)
api:                                    # the local API: status, metrics, webhook, POST /sync
  listen: 127.0.0.1:{port}                # loopback only: dev 3005, prod 3006; reach it through the tunnel
  # access:                             # Cloudflare Access; without it POST /sync is refused
  #   team_domain: https://<team>.cloudflareaccess.com   # your Access team domain
  #   audience: <application AUD tag>   # the Access application's audience tag
  #   jwks_url: https://<team>.cloudflareaccess.com/cdn-cgi/access/certs   # default: from team_domain
  #   allowed_emails: []                # only these people may call the API (empty: any Access user)
health:                                 # the gate a new container must pass, else it is rolled back
  timeout: 60                           # seconds the new container has to become healthy, else rollback
  stable: 10                            # seconds running without a restart, for images without HEALTHCHECK
# notify:                               # tell people about decisions through Apprise (optional)
#   urls: ["ntfys://${{NTFY_TOKEN}}@ntfy.example.com/dreichor-{environment}"]   # ${{NAME}} is read from .env
#   events: [refused, rolled_back, failed, recovered, drift_repaired, stale, suspended, resumed, applied,
#            waiting_approval, waiting_window]
#   repeat: 3600                        # seconds before an unresolved problem is told again
# approvals:                            # k named people must sign a change's content (optional; docs/trust.md)
#   threshold: 2                        # distinct people who must approve envs/{environment}.yaml's new content
#   approvers: trust/approvers          # their SSH keys, allowed_signers format: one person per line
#   max_age: 7d                         # the longest validity an approval may claim
#   # openpgp_keys: trust/approvers.asc  # approvers' OpenPGP keys, each named below by its fingerprint
#   # openpgp_approvers: {{968479A1AFF927E37D1A566BB5690EEEBB952194: carol}}
#   # withdrawn:                        # approvals that no longer count on this host (docs/trust.md)
#   #   -
#   #     sha256: <64 hex>                # one approval file, by the SHA-256 `approvals` prints for it
#   #   -
#   #     person: bob                     # bob's approvals …
#   #     not_before: 2026-12-05T10:00:00Z  # … created before this time
#   # repository: github.com/ceerkle/dreichor-deployments   # default: from source.url
# windows:                              # when a change may apply (optional; docs/design.md 18, docs/operations.md)
#   timezone: Europe/Berlin             # the IANA zone the cron times below are read in
#   allow:                              # windows a change may apply in; none: whenever no freeze holds
#     - cron: "0 18 * * 1-5"            # cron's five fields: weekdays at 18:00 ...
#       duration: 3h                    # ... for three hours
#   deny:                               # freezes: no change applies in them, allow window or not
#     - cron: "0 0 20 12 *"             # from 20 December ...
#       duration: 14d                   # ... to 3 January
# github:                               # commit statuses dreichor/{environment} on the manifest repo (optional)
#   repository: ceerkle/dreichor-deployments   # owner/name; the token is GITHUB_TOKEN in .env
#   api_url: https://api.github.com     # GitHub Enterprise: https://<host>/api/v3
"""

STARTER_DOTENV = """\
# Secrets for the {environment} controller: every key it reads. Keep this file root-owned, mode 0600.
# Only DATABASE_URL reaches the runtime container; the others never leave the controller.
#
# The runtime's database: its name must be dreichor_{environment}.
# DATABASE_URL=postgresql://dreichor@127.0.0.1:5432/dreichor_{environment}
# Fetching a private manifest repository over https (a read-only token) ...
# GIT_TOKEN=
# ... or over ssh (a read-only deploy key; path to the private key file). The server's host key
# must be in {known_hosts} (docs/operations.md, "An ssh source").
# GIT_SSH_KEY={agent}/trust/deploy_key
# Pulling from a private registry.
# REGISTRY_USERNAME=
# REGISTRY_PASSWORD=
# Checking GitHub webhooks (POST /hooks/github): the webhook's secret.
# GITHUB_WEBHOOK_SECRET=
# Commit statuses (github in controller.yaml): a token with "Commit statuses: write".
# GITHUB_TOKEN=
"""

STARTER_ALLOWED_SIGNERS = """\
# Who may sign deployments of {environment}: one line per key, in git's allowed_signers format
# (man ssh-keygen, "ALLOWED SIGNERS"): principal, optional options, the public key. Example:
# ops@example.com namespaces="git" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... ops laptop
"""

NEXT_STEPS = """\
Next steps:
  1. Set source.url (and branch) in {config}: the controller does not start without it
  2. Add the signers' public keys to {signers} and DATABASE_URL to {dotenv}
  3. Check it: {check}
     then start it: {start}
"""
DROP_IN_NOTE = """\
     (first copy {drop_in}, which tells the unit this root, to
      /etc/systemd/system/dreichor-controller@{environment}.service.d/root.conf, then 'systemctl daemon-reload')
"""
SYSTEMD_DROP_IN = """\
# The controller's root for {environment} is {root}, not /opt/dreichor: systemd reads it from here.
# (The empty lines reset the unit's /opt/dreichor values: a missing ReadWritePaths= folder stops the unit.)
# Install: copy this file to /etc/systemd/system/dreichor-controller@{environment}.service.d/root.conf
[Unit]
AssertPathExists=
AssertPathExists={root}/{environment}/deploy-agent/controller.yaml

[Service]
Environment=DREICHOR_ROOT={root}
ReadWritePaths=
ReadWritePaths={root}/{environment}/deploy-agent/state
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
    dotenv = STARTER_DOTENV.format(environment=environment, agent=paths.agent_dir, known_hosts=paths.known_hosts)
    files = [
        (paths.config, _config_text(root, environment), 0o644),
        (paths.dotenv, dotenv, 0o600),
        (paths.trust_dir / "allowed_signers", STARTER_ALLOWED_SIGNERS.format(environment=environment), 0o644),
    ]
    if root != Path(DEFAULT_ROOT):
        files.append((drop_in(paths), SYSTEMD_DROP_IN.format(environment=environment, root=root), 0o644))
    for path, text, mode in files:
        if create_new(path, text.encode(), mode=mode):
            created.append(path)
    return created


def drop_in(paths: HostPaths) -> Path:
    """The systemd drop-in ``init`` writes for a root other than /opt/dreichor (to be copied into /etc)."""
    return paths.agent_dir / "systemd-root.conf"


def next_steps(root: Path, environment: str) -> str:
    """What to do after ``init``: the three steps from a fresh layout to a running controller."""
    paths = HostPaths(root, environment)
    signers = paths.trust_dir / "allowed_signers"
    default = root == Path(DEFAULT_ROOT)
    check = f"dreichor-controller plan -e {environment}" + ("" if default else f"   (with DREICHOR_ROOT={root})")
    start = f"systemctl enable --now dreichor-controller@{environment}"
    steps = NEXT_STEPS.format(config=paths.config, signers=signers, dotenv=paths.dotenv, check=check, start=start)
    return steps if default else steps + DROP_IN_NOTE.format(drop_in=drop_in(paths), environment=environment)


def _config_text(root: Path, environment: str) -> str:
    return STARTER_CONFIG.format(
        environment=environment,
        root=root,
        repository=DEFAULT_REPOSITORY,
        port=API_PORTS[environment],
    )
