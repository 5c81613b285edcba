"""The controller's own supply chain: it installs what uv.lock pins, and ships the same wheel every time.

- uv.lock covers pyproject.toml: every dependency it names (runtime, dev groups, the build backend)
  is locked at a version its range admits, and uv finds nothing stale; the pip files scripts/lock
  exports (requirements.txt, scripts/uv-bootstrap.txt) are what uv exports from the lock now.
- The installing scripts take nothing from outside the lock, the runtime imports only locked
  packages, and the environment these tests run in passes ``pip check``.
- scripts/build gives the same bytes twice from one commit: a wheel with every file of the package,
  an SBOM naming every locked runtime package with its version and hashes, and requirements that
  pin the wheel too.
- The release workflow passes actionlint (which cannot reach GitHub: the workflow is checked, not run)
  and pins what it uses.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

import controller

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCK = ROOT / "uv.lock"
PYPROJECT = ROOT / "pyproject.toml"
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
EXPORTS = {
    "requirements.txt": ["--no-dev"],
    "scripts/uv-bootstrap.txt": ["--only-group", "lock"],
}


def canonical(name: str) -> str:
    """A package name as the index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(lock: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """uv.lock's packages by canonical name (the project itself left out)."""
    return {canonical(p["name"]): p for p in lock["package"] if "editable" not in p["source"]}


def requirements(project: dict[str, Any]) -> list[str]:
    """Every requirement pyproject.toml names: runtime, each dependency group, the build backend."""
    groups = [r for group in project.get("dependency-groups", {}).values() for r in group if isinstance(r, str)]
    return [*project["project"]["dependencies"], *groups, *project["build-system"]["requires"]]


def uncovered(project: dict[str, Any], lock: dict[str, Any]) -> list[str]:
    """The requirements of ``project`` the lock does not satisfy, each with why."""
    packages = locked(lock)
    problems = []
    for text in requirements(project):
        req = Requirement(text)
        package = packages.get(canonical(req.name))
        if package is None:
            problems.append(f"{text}: not in uv.lock")
        elif not req.specifier.contains(Version(package["version"]), prereleases=True):
            problems.append(f"{text}: uv.lock pins {package['version']}")
    return problems


def uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The locked uv, offline: nothing here may reach the package index."""
    return subprocess.run(
        [str(BIN / "uv"), *args, "--offline"], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


def runtime_closure() -> dict[str, str]:
    """The packages requirements.txt pins (the runtime closure), name to version."""
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    return {canonical(name): version for name, version in pins}


def test_the_lock_covers_every_dependency_pyproject_names() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    assert uncovered(project, tomllib.loads(LOCK.read_text())) == []


def test_a_dependency_the_lock_does_not_cover_is_named() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    project["project"]["dependencies"] += ["requests-toolbelt>=1", "PyJWT>=99"]
    assert uncovered(project, tomllib.loads(LOCK.read_text())) == [
        "requests-toolbelt>=1: not in uv.lock",
        f"PyJWT>=99: uv.lock pins {locked(tomllib.loads(LOCK.read_text()))['pyjwt']['version']}",
    ]


def test_uv_finds_the_lock_current_and_a_changed_pyproject_stale(tmp_path: Path) -> None:
    current = uv("lock", "--check")
    assert current.returncode == 0, current.stderr
    shutil.copy2(LOCK, tmp_path / "uv.lock")
    text = PYPROJECT.read_text().replace('"GitPython>=3.1.40,<4",', '"GitPython>=3.1.40,<4",\n    "tomli-w>=1",')
    assert "tomli-w" in text
    (tmp_path / "pyproject.toml").write_text(text)
    stale = uv("lock", "--check", cwd=tmp_path)
    assert stale.returncode != 0, stale.stdout + stale.stderr


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_the_pip_files_are_exported_from_the_lock_as_it_is(name: str) -> None:
    exported = uv("export", "--frozen", "--no-emit-project", "--no-header", "--quiet", *EXPORTS[name])
    assert exported.returncode == 0, exported.stderr
    header = f"# Exported from uv.lock by ./scripts/lock (do not edit): pip install --require-hashes -r {name}\n"
    assert (ROOT / name).read_text() == header + exported.stdout, f"{name} is stale: run ./scripts/lock"


def test_the_installing_scripts_take_only_the_lock() -> None:
    """Every install in setup, CI and the release goes through uv.lock or a hash-checked pip file."""
    texts = {p: p.read_text() for p in [*(ROOT / "scripts").glob("*"), ROOT / ".ci" / "run", WORKFLOW] if p.is_file()}
    installs = [
        (path.relative_to(ROOT).as_posix(), line.strip())
        for path, text in texts.items()
        for line in text.replace("\\\n", " ").splitlines()
        if re.search(r"\b(pip install|uv sync|uv pip install)\b", line) and not line.lstrip().startswith("#")
    ]
    assert installs, "no install found: the pattern no longer matches the scripts"
    loose = [(path, line) for path, line in installs if "--require-hashes" not in line and "--locked" not in line]
    assert loose == []
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "uv sync --quiet --locked --no-install-project" in setup
    assert "--require-hashes --no-deps" in setup


def third_party_imports(files: list[Path]) -> dict[str, list[str]]:
    """Top-level modules imported by ``files`` outside the standard library and the package, with who imports them."""
    found: dict[str, list[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "controller":
                    found.setdefault(top, []).append(path.name)
    return found


def unlocked(modules: dict[str, list[str]], closure: dict[str, str]) -> list[str]:
    """The modules no package of ``closure`` provides."""
    providers = importlib.metadata.packages_distributions()
    return sorted(
        f"{module} (imported by {', '.join(sorted(set(users)))})"
        for module, users in modules.items()
        if not any(canonical(dist) in closure for dist in providers.get(module, []))
    )


def test_the_runtime_imports_only_packages_the_lock_pins() -> None:
    modules = third_party_imports(sorted((ROOT / "controller").rglob("*.py")))
    assert {"docker", "git", "sigstore", "yaml"} <= set(modules)
    assert unlocked(modules, runtime_closure()) == []


def test_an_import_outside_the_runtime_closure_is_named(tmp_path: Path) -> None:
    module = tmp_path / "rogue.py"
    module.write_text("import hypothesis\nfrom nosuchpackage import x\nimport docker\n")
    assert unlocked(third_party_imports([module]), runtime_closure()) == [
        "hypothesis (imported by rogue.py)",
        "nosuchpackage (imported by rogue.py)",
    ]


def test_pip_check_passes_in_the_installed_environment() -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No broken requirements found." in proc.stdout


def test_the_installed_environment_is_the_locked_set() -> None:
    """What these tests import is what uv.lock pins: same names, same versions (the tools' own pip aside)."""
    packages = locked(tomllib.loads(LOCK.read_text()))
    installed = {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    installed.pop("dreichor-controller")
    installed.pop("pip", None)  # the venv's own, which installed uv
    assert installed == {name: p["version"] for name, p in packages.items()}


def build(out: Path, *, umask: int = 0o022) -> dict[str, Path]:
    """scripts/build into ``out`` with this interpreter's environment: the files it wrote, by kind."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build"), str(out)],
        env={**os.environ, "PYTHON": sys.executable},
        umask=umask,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("*.whl")
    (sbom,) = out.glob("*.cdx.json")
    return {"wheel": wheel, "sbom": sbom, "requirements": out / "requirements.txt"}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One build of this tree, for the tests that read what it wrote: under ``--wheel``, the one being tested."""
    if dist := os.environ.get("DREICHOR_TEST_WHEEL"):
        out = Path(dist)
        return {
            "wheel": next(out.glob("*.whl")),
            "sbom": next(out.glob("*.cdx.json")),
            "requirements": out / "requirements.txt",
        }
    return build(tmp_path_factory.mktemp("release"))


def test_the_same_commit_builds_the_same_bytes(release: dict[str, Path], tmp_path: Path) -> None:
    again = build(tmp_path / "elsewhere", umask=0o002)  # another folder, another umask: the same bytes
    for kind, path in release.items():
        assert again[kind].name == path.name
        assert again[kind].read_bytes() == path.read_bytes(), f"the {kind} differs between two builds"


def test_the_wheel_holds_every_file_of_the_package(release: dict[str, Path]) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "controller"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "controller/api/templates/page.html" in tracked
    with zipfile.ZipFile(release["wheel"]) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    missing = [path for path in tracked if (ROOT / path).is_file() and path not in names]
    assert missing == []
    assert "Provides-Extra" not in metadata, "the dev tools are dependency groups, not extras of the wheel"
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requires = re.findall(r"^Requires-Dist: (.*)$", metadata, re.MULTILINE)
    assert sorted(map(canonical, (Requirement(r).name for r in requires))) == sorted(
        canonical(Requirement(r).name) for r in project["dependencies"]
    )


def test_the_sbom_lists_every_locked_runtime_package_with_version_and_hashes(release: dict[str, Path]) -> None:
    sbom = json.loads(release["sbom"].read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    components = {canonical(c["name"]): c for c in sbom["components"]}
    packages = locked(tomllib.loads(LOCK.read_text()))
    closure = runtime_closure()
    assert {"docker", "cryptography", "sigstore", "urllib3"} <= set(closure)
    assert set(components) == set(closure)
    for name in closure:
        component, package = components[name], packages[name]
        assert component["version"] == package["version"]
        assert component["purl"] == f"pkg:pypi/{name}@{package['version']}"
        listed = {h["content"] for ref in component["externalReferences"] for h in ref.get("hashes", [])}
        files = [package.get("sdist", {}), *package.get("wheels", [])]
        hashes = {f["hash"].removeprefix("sha256:") for f in files if f}
        assert hashes and listed == hashes, f"{name}: the SBOM's hashes are not the lock's"
    root = sbom["metadata"]["component"]
    assert root["name"] == "dreichor-controller"
    assert root["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(release["wheel"].read_bytes()).hexdigest()}]
    graph = {node["ref"]: node["dependsOn"] for node in sbom["dependencies"]}
    assert components["docker"]["bom-ref"] in graph[root["bom-ref"]]


def test_the_release_requirements_pin_the_closure_and_the_wheel(release: dict[str, Path]) -> None:
    text = release["requirements"].read_text()
    sha = hashlib.sha256(release["wheel"].read_bytes()).hexdigest()
    assert f"./{release['wheel'].name} --hash=sha256:{sha}" in text.splitlines()
    assert text.startswith((ROOT / "requirements.txt").read_text().split("\n", 1)[1])


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "actionlint"), "-no-color", str(path)], capture_output=True, text=True, check=False, timeout=60
    )


def test_the_release_workflow_passes_actionlint() -> None:
    proc = actionlint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_fails_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "release.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04"))
    proc = actionlint(broken)
    assert proc.returncode == 1
    assert 'unexpected key "runs_on"' in proc.stdout


def test_the_release_workflow_builds_from_the_lock_and_attests_wheel_and_sbom() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as true
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "write", "id-token": "write", "attestations": "write"}
    steps = job["steps"]
    uses = [s["uses"] for s in steps if "uses" in s]
    assert all(re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", u) for u in uses), uses
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "uv sync --locked" in runs
    assert "./scripts/build dist" in runs
    (attest,) = (s for s in steps if s.get("uses", "").startswith("actions/attest-build-provenance@"))
    assert attest["with"]["subject-path"].split() == ["dist/*.whl", "dist/*.cdx.json"]
    assert "dist/attestation.sigstore.jsonl" in runs


def test_the_tests_import_the_wheel_when_ci_asks_for_it() -> None:
    """Under ``./scripts/test --wheel`` (CI's fast tier) nothing here may import the source tree."""
    if not os.environ.get("DREICHOR_TEST_WHEEL"):
        pytest.skip("the fast tier runs against the source tree here; CI runs it against the wheel (--wheel)")
    assert not Path(controller.__file__).resolve().is_relative_to(ROOT / "controller")
    direct = importlib.metadata.distribution("dreichor-controller").read_text("direct_url.json") or "{}"
    assert not json.loads(direct).get("dir_info", {}).get("editable"), "the controller is installed editable"
    child = subprocess.run(
        [sys.executable, "-c", "import controller; print(controller.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not Path(child.stdout.strip()).resolve().is_relative_to(ROOT / "controller"), "a child imports the source"
