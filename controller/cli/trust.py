"""The commands that judge: ``validate`` a manifest, ``verify`` a commit, ``verify-image``, ``approve`` and
``approvals``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.cli.environment import service_for
from controller.cli.exits import EXIT_OK, EXIT_REFUSED
from controller.cli.render import describe_container, fail, print_json
from controller.errors import ConfigError, Refused
from controller.model.config import DEFAULT_MAX_AGE, config_path, load_config
from controller.model.durations import parse_duration, spoken_duration
from controller.model.environments import ENVIRONMENTS
from controller.service import APPROVAL_VALIDITY, validate_file, write_approval


def cmd_validate(args: argparse.Namespace) -> int:
    """``validate FILE``: exit 0 with the desired container, 3 with every reason."""
    stdin = str(args.file) == "-"
    if stdin and not getattr(args, "environment", None):
        raise ConfigError("reading the manifest from stdin: pass --environment")
    environment = getattr(args, "environment", None) or environment_from_name(args.file)
    try:
        desired = validate_file(
            args.file,
            environment=environment,
            config_file=_validation_config(args, environment),
            data=sys.stdin.buffer.read() if stdin else None,
        )
    except Refused as exc:
        if not args.json:
            raise
        for reason in exc.reasons:
            fail(f"refused: {reason}")
        print_json({"file": str(args.file), "valid": False, "reasons": list(exc.reasons), "error": str(exc)})
        return EXIT_REFUSED
    view = desired.describe()
    if args.json:
        print_json({"file": str(args.file), "valid": True, "container": view})
    else:
        print(f"valid: {args.file} ({environment})")
        print(describe_container(view))
    return EXIT_OK


def environment_from_name(path: Path) -> str:
    if path.stem in ENVIRONMENTS and path.suffix in (".yaml", ".yml"):
        return path.stem
    raise ConfigError(f"cannot tell the environment from the name {path.name!r}: pass --environment")


def cmd_verify(args: argparse.Namespace) -> int:
    """``verify [REV]``: exit 0 with the signer (and the image's, with ``image.signatures``), 3 with the reason."""
    answer = service_for(args).verify(args.rev)
    if answer.refusal is not None:
        if not args.json:
            raise answer.refusal
        fail(f"refused: {answer.refusal}")
        reason = str(answer.refusal)
        refused = {"revision": answer.revision, "trusted": False, "reason": reason, "error": reason}
        signer = {"signer": answer.verdict.signer} if answer.verdict else {}  # the commit passed, the image did not
        print_json({**refused, **signer})
        return EXIT_REFUSED
    verdict = answer.verdict
    assert verdict is not None  # noqa: S101 a verification without a refusal has a verdict
    if args.json:
        print_json(
            {
                "revision": answer.revision,
                "trusted": True,
                "signer": verdict.signer,
                "key_type": verdict.key_type,
                "detail": verdict.detail,
                "image_signer": answer.image.image_signer if answer.image else None,
            }
        )
    else:
        print(f"trusted: {verdict.describe()}")
        if answer.image:
            print(f"image signed by {answer.image.image_signer}")
    return EXIT_OK


def cmd_verify_image(args: argparse.Namespace) -> int:
    """``verify-image IMAGE@DIGEST``: exit 0 with the image's signer, 3 refused, 1 other."""
    verdict = service_for(args).verify_image(args.image)
    source = verdict.source.as_record() if verdict.source else None
    if args.json:
        print_json({"image": args.image, "trusted": True, "image_signer": verdict.image_signer, "image_source": source})
    else:
        print(f"trusted: {args.image} signed by {verdict.image_signer} ({verdict.format})")
        if source:
            print("built from " + " ".join(str(source[k]) for k in ("repository", "ref", "commit") if source[k]))
    return EXIT_OK


def _validation_config(args: argparse.Namespace, environment: str) -> Path | None:
    """``--config``; else, with ``-e``, that environment's config on this host when there is one (a CI
    runner has none: the manifest is then checked against the default repository)."""
    if getattr(args, "config", None):
        return config_path(args.config)
    if getattr(args, "environment", None):
        on_host = config_path(None, environment=environment)
        return on_host if on_host.exists() else None
    return None


def cmd_approve(args: argparse.Namespace) -> int:
    """``approve FILE``: sign an approval of the file's content in its clone; print the path to commit."""
    valid_for = APPROVAL_VALIDITY
    if args.expires:
        try:
            valid_for = parse_duration(args.expires)
        except ValueError as exc:
            raise ConfigError(f"--expires: {exc}") from None
    _warn_past_max_age(args, valid_for)
    written = write_approval(
        args.file, key=args.key, valid_for=valid_for, repository=args.repository, now=datetime.now(UTC)
    )
    print(f"wrote {written}")
    # -S: the approval's commit is a first-parent commit like any other, and the host counts only signed ones
    print(f"commit and push it: git add '{written}' && git commit -S -m 'Approve {args.file}' && git push")
    return EXIT_OK


def _warn_past_max_age(args: argparse.Namespace, valid_for: timedelta) -> None:
    """Say so when the approval claims longer than the host counts: its ``max_age`` with ``-e``/``--config``."""
    if getattr(args, "config", None) or getattr(args, "environment", None):
        approvals = load_config(config_path(args.config, environment=args.environment)).approvals
        limit, whose = (approvals.max_validity if approvals else None), "the host's approvals.max_age"
    else:
        limit, whose = parse_duration(DEFAULT_MAX_AGE), "the default approvals.max_age (pass -e ENV to read the host's)"
    if limit is not None and valid_for > limit:
        fail(
            f"warning: --expires {spoken_duration(valid_for)} is longer than {whose} of {spoken_duration(limit)}: "
            "the host will not count this approval"
        )


def cmd_approvals(args: argparse.Namespace) -> int:
    """``approvals``: for the head's content, who approved, who is missing, when each approval expires."""
    report = service_for(args).approvals()
    tally = report.tally
    if args.json:
        print_json(
            {
                "revision": report.revision,
                "content": tally.content,
                "need": tally.need,
                "have": tally.have,
                "missing": tally.missing,
                "enough": tally.enough,
                "approvals": [
                    {"person": a.person, "expires": a.expires.isoformat(), "file": a.file, "sha256": a.sha256}
                    for a in tally.counted
                ],
                "not_counted": [r.reason for r in tally.rejected],
            }
        )
        return EXIT_OK
    enough = "enough" if tally.enough else "not enough"
    now = datetime.now(UTC)
    print(f"head {report.revision[:12]}, content {tally.content[:12]}: {len(tally.counted)} of {tally.need} — {enough}")
    for approval in tally.counted:
        until = f"{approval.expires:%Y-%m-%d %H:%M} UTC (in {spoken_duration(approval.expires - now)})"
        where = f"{approval.file}, sha256 {approval.sha256}"  # the sha256 is what approvals.withdrawn takes
        print(f"  approved    {approval.person}  until {until}  ({where})")
    for person in [] if tally.enough else tally.missing:  # once enough approved, no one is missing
        print(f"  missing     {person}")
    for rejection in tally.rejected:
        print(f"  not counted {rejection.reason}")
    return EXIT_OK
