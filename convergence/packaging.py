"""Stage each Cloud Function's source folder: main.py, common/, configs/ and pinned requirements.txt.

`convergence stage` writes `build/<function>/`, the folder Terraform zips (archive_file) and uploads under
its content hash. A staged folder is self-contained: its `main.py` imports `common.*` from the copy beside
it, `common/settings.py` finds `configs/` beside `common/` as in the repository, and `requirements.txt`
pins exactly the runtime dependency closure of the `convergence` distribution for the target runtime
(Python 3.11 on Linux), read from the installed distributions' metadata — not a freeze of the dev venv.

Staging is deterministic: files are copied in sorted order with fixed permissions and modification
times, so the archive (and its hash) changes only when content changes. Terraform's archive_file zeroes
timestamps itself but keeps each file's mode, which would otherwise follow the umask of whoever staged.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from common.errors import ConfigurationError

FUNCTIONS = ("onboard", "trigger", "step_execute")
DISTRIBUTION = "convergence"
SOURCE_ROOT = Path(__file__).resolve().parent.parent

IGNORED_NAMES = re.compile(r"^(__pycache__|\..*|.*\.py[co])$")
MODULE_STRING = re.compile(r"(common|convergence)(\.\w+)+")  # e.g. importlib.import_module("common.processors.dq")

# Cloud Functions gen2, runtime python311 (Ubuntu, x86_64): where Requires-Dist markers are evaluated.
TARGET_ENVIRONMENT: Mapping[str, str] = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.0",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.0",
    "python_version": "3.11",
    "sys_platform": "linux",
}
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z, for zippers that keep timestamps (zip, gcloud --source)
FILE_MODE, DIR_MODE = 0o644, 0o755


class StagingError(ConfigurationError):
    """Staging cannot produce a correct folder (missing source, dependency or an excluded import)."""

    code = "staging_error"


@dataclass(frozen=True)
class StagedFunction:
    """One staged folder: what `convergence stage` prints and Terraform archives."""

    name: str
    folder: Path
    files: int
    sha256: str

    def summary(self) -> str:
        return f"{self.name}: {self.files} files, sha256 {self.sha256}, {self.folder}"


def runtime_requirements(
    distribution: str = DISTRIBUTION, environment: Mapping[str, str] = TARGET_ENVIRONMENT
) -> list[str]:
    """`name==version` for every distribution the runtime needs, sorted by name.

    Walks Requires-Dist from `distribution` (without its own extras: test and dev stay out), following the
    extras each requirement asks for (`tink[gcpkms]`), evaluating markers for `environment`. Versions are
    the installed ones, checked against every specifier met on the way.
    """
    root = _distribution(distribution, None)
    root_name = canonicalize_name(root.metadata["Name"])
    pins: dict[str, str] = {}
    extras_seen: dict[str, set[str]] = {}
    pending: list[tuple[Requirement, str]] = [(r, root_name) for r in _requires(root, set(), environment)]
    while pending:
        requirement, parent = pending.pop()
        name = canonicalize_name(requirement.name)
        if name == root_name:
            continue
        dist = _distribution(requirement.name, parent)
        version = dist.version
        if not requirement.specifier.contains(version, prereleases=True):
            raise StagingError(
                f"{requirement.name} {version} is installed but {parent} requires {requirement}: "
                "reinstall the project (pip install -e .)"
            )
        seen = extras_seen.get(name)
        wanted = {canonicalize_name(extra) for extra in requirement.extras}
        if seen is not None and wanted <= seen:
            continue
        extras_seen[name] = (seen or set()) | wanted
        pins[name] = version
        pending.extend((r, name) for r in _requires(dist, extras_seen[name], environment))
    return [f"{name}=={pins[name]}" for name in sorted(pins)]


def _distribution(name: str, parent: str | None) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        needed = f" (required by {parent})" if parent else ""
        raise StagingError(
            f"{name}{needed} is not installed here; install the project first (pip install -e .)"
        ) from None


def _requires(
    dist: importlib.metadata.Distribution, extras: set[str], environment: Mapping[str, str]
) -> Iterator[Requirement]:
    """The requirements of `dist` that apply on the target with the given extras requested."""
    for line in dist.requires or ():
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise StagingError(
                f"{dist.metadata['Name']} declares an unreadable requirement {line!r}: {exc}"
            ) from None
        marker = requirement.marker
        if marker is None or any(marker.evaluate({**environment, "extra": e}) for e in ("", *sorted(extras))):
            yield requirement


def content_hash(folder: Path) -> tuple[int, str]:
    """(file count, sha256 over sorted relative paths and bytes) of a folder: the archive's identity."""
    digest = hashlib.sha256()
    count = 0
    for path in _files(folder):
        data = path.read_bytes()
        relative = path.relative_to(folder).as_posix().encode()
        digest.update(b"%d:%s\0%d:" % (len(relative), relative, len(data)))
        digest.update(data)
        count += 1
    return count, digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    """Every regular file under `folder`, sorted by relative POSIX path."""
    found = [Path(root) / name for root, _dirs, names in os.walk(folder) for name in names]
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def stage_functions(
    out: Path,
    functions: Iterable[str] = FUNCTIONS,
    *,
    source_root: Path = SOURCE_ROOT,
    requirements: list[str] | None = None,
) -> list[StagedFunction]:
    """Stage each named function into `out/<function>/`, replacing what was there; return summaries."""
    names = list(dict.fromkeys(functions))
    unknown = [name for name in names if name not in FUNCTIONS]
    if unknown:
        raise StagingError(f"unknown function {', '.join(unknown)}: choose from {', '.join(FUNCTIONS)}")
    source_root = source_root.resolve()
    for part in ("common", "configs", *(f"functions/{name}/main.py" for name in names)):
        if not (source_root / part).exists():
            raise StagingError(
                f"{part} not found under {source_root}: stage from the repository (an editable install)"
            )
    out = out.resolve()
    _refuse_to_overwrite_sources(out, names, source_root)
    pins = runtime_requirements() if requirements is None else requirements
    return [_stage_one(name, out, source_root, pins) for name in names]


def _refuse_to_overwrite_sources(out: Path, names: list[str], source_root: Path) -> None:
    """Staging deletes `out/<function>`: make sure that can never be (or hold) a source folder."""
    protected = [
        source_root / part for part in ("common", "convergence", "configs", "functions", "terraform", "tests", ".git")
    ]
    for name in names:
        for target in (out / name, out / f".{name}.staging"):
            inside = any(target.is_relative_to(source) for source in protected)
            holding = any(source.is_relative_to(target) for source in (*protected, source_root))
            if inside or holding:
                raise StagingError(f"refusing to stage into {out}: {target} would overwrite sources")


def _stage_one(name: str, out: Path, source_root: Path, pins: list[str]) -> StagedFunction:
    final = out / name
    work = out / f".{name}.staging"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        _copy_file(source_root / "functions" / name / "main.py", work / "main.py")
        _copy_tree(source_root / "common", work / "common", set())
        _copy_tree(source_root / "configs", work / "configs", set())
        (work / "requirements.txt").write_text("".join(f"{pin}\n" for pin in pins), encoding="utf-8")
        _check_imports(work, source_root)
        _fix_metadata(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    os.utime(final, (FIXED_MTIME, FIXED_MTIME))
    files, digest = content_hash(final)
    return StagedFunction(name, final, files, digest)


def _copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _copy_tree(source: Path, target: Path, excluded: set[Path]) -> None:
    """Copy `source` into `target` in sorted order, skipping caches, hidden files and `excluded`."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir(), key=lambda path: path.name):
        if IGNORED_NAMES.match(entry.name) or entry in excluded:
            continue
        if entry.is_dir():
            _copy_tree(entry, target / entry.name, excluded)
        elif entry.is_file():
            _copy_file(entry, target / entry.name)


def _fix_metadata(folder: Path) -> None:
    """Fixed permissions and modification times, deepest first, so two stagings zip identically."""
    for root, dirs, names in os.walk(folder, topdown=False):
        for name in names:
            path = Path(root) / name
            path.chmod(FILE_MODE)
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        for name in dirs:
            path = Path(root) / name
            path.chmod(DIR_MODE)
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    folder.chmod(DIR_MODE)
    os.utime(folder, (FIXED_MTIME, FIXED_MTIME))


def _check_imports(staged: Path, source_root: Path) -> None:
    """Fail if a staged module names (imports, even lazily, or by string) the tooling package `convergence`,
    which is never staged: a function must run on `common/` alone."""
    problems = []
    for path in _files(staged):
        if path.suffix != ".py":
            continue
        relative = PurePosixPath(path.relative_to(staged).as_posix())
        for module in _referenced_modules(path.read_text(encoding="utf-8"), relative):
            if module == "convergence" or module.startswith("convergence."):
                problems.append(f"{relative} uses {module}")
    if problems:
        raise StagingError(
            "a staged module needs code left out as dev-only (update DEV_ONLY in convergence/packaging.py): "
            + "; ".join(sorted(set(problems)))
        )


def _referenced_modules(source: str, relative: PurePosixPath) -> set[str]:
    """Every dotted name a module imports, imports from, or spells as a `common.*` string."""
    package = list(relative.parent.parts)  # relative imports resolve against the containing package
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=str(relative))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MODULE_STRING.fullmatch(node.value)
        ):
            names.add(node.value)
    return names
