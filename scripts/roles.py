"""What each role installs: the constraints file the images install from, and the installed size per role.

The roles are the extras of pyproject.toml (``worker``, ``alerts``, ``ingest``, ``train``, ``demo``; the
base alone is the ``topics`` step). A role's closure is its requirements and theirs, resolved against
the distributions installed in this environment (``scripts/setup.sh`` installs ``.[dev]``, i.e. all
of them), so the versions are the ones the tests ran with.

    python scripts/roles.py lock [--out constraints.txt]     # write the constraints (runtime roles)
    python scripts/roles.py lock --check                     # exit 1 if constraints.txt is stale
    python scripts/roles.py sizes [--out benchmarks/results/role_sizes.json]

``sizes`` prints ONE JSON line: per role, the distributions and the megabytes they occupy in
site-packages (summed from each distribution's RECORD). torch here is the CPU build; the CUDA builds
add the CUDA libraries (the nvidia-* wheels, several GB) to the worker only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "constraints.txt"
RUNTIME_ROLES = ("topics", "worker", "alerts", "ingest", "ehr", "train", "demo")
"""Roles the images and hosts run; ``dev`` (tests, linters) is not locked."""
HEADER = """\
# Resolved versions of every runtime dependency of notestream (all roles but dev), the ones its test
# suite runs with. Images install with `pip install -c constraints.txt ".[ROLE]"`.
# Written by `python scripts/roles.py lock`; checked by tests/deploy/test_packaging.py.
"""


def project() -> dict[str, object]:
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    proj: dict[str, object] = data["project"]
    return proj


def role_requirements(role: str) -> list[Requirement]:
    """The direct requirements of a role: the base, plus the role's extra (self-references expanded).

    >>> sorted(r.name for r in role_requirements("topics"))[:3]
    ['aiohttp', 'aiokafka', 'prometheus-client']
    >>> "torch" in {r.name for r in role_requirements("alerts")}
    False
    """
    proj = project()
    name = str(proj["name"])
    extras: dict[str, list[str]] = proj.get("optional-dependencies", {})  # type: ignore[assignment]
    out: list[Requirement] = [Requirement(r) for r in proj["dependencies"]]  # type: ignore[attr-defined]
    todo = [] if role == "topics" else [role]
    seen: set[str] = set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in extras:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}")
        for text in extras[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == canonicalize_name(name):
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


def closure(requirements: Iterable[Requirement]) -> dict[str, metadata.Distribution]:
    """Installed distributions that ``requirements`` need, transitively (by canonical name)."""
    found: dict[str, metadata.Distribution] = {}
    todo: list[tuple[Requirement, tuple[str, ...]]] = [(r, tuple(r.extras)) for r in requirements]
    asked: dict[str, set[str]] = {}
    while todo:
        req, extras = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        wanted = asked.setdefault(key, set())
        if key in found and set(extras) <= wanted:
            continue
        wanted.update(extras)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError as exc:
            raise SystemExit(f"{req.name} is not installed; run scripts/setup.sh first") from exc
        found[key] = dist
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *wanted)):
                todo.append((Requirement(str(sub).split(";")[0]), tuple(sub.extras)))
    return found


def public_version(dist: metadata.Distribution) -> str:
    """The version without a local label (``2.13.0+cpu`` -> ``2.13.0``): any build of it satisfies.

    >>> public_version(metadata.distribution("pip")).count("+")
    0
    """
    return dist.version.split("+", 1)[0]


def render_constraints() -> str:
    dists: dict[str, metadata.Distribution] = {}
    for role in RUNTIME_ROLES:
        dists.update(closure(role_requirements(role)))
    lines = [f"{name}=={public_version(dists[name])}" for name in sorted(dists)]
    return HEADER + "\n".join(lines) + "\n"


def installed_bytes(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        if file.size is not None:
            total += file.size
        else:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                total += path.stat().st_size
    return total


def sizes() -> dict[str, object]:
    line: dict[str, object] = {"python": sys.version.split()[0], "torch_build": None}
    with contextlib.suppress(metadata.PackageNotFoundError):
        line["torch_build"] = metadata.version("torch")
    roles = {}
    for role in RUNTIME_ROLES:
        dists = closure(role_requirements(role))
        roles[role] = {
            "distributions": len(dists),
            "installed_mb": round(sum(installed_bytes(d) for d in dists.values()) / 1e6, 1),
            "torch": "torch" in dists,
        }
    line["roles"] = roles
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lock = sub.add_parser("lock", help="Write (or --check) the constraints file.")
    lock.add_argument("--out", type=Path, default=CONSTRAINTS)
    lock.add_argument("--check", action="store_true", help="Exit 1 if the file differs.")
    size = sub.add_parser("sizes", help="Print the installed size per role (one JSON line).")
    size.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "lock":
        text = render_constraints()
        if args.check:
            current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
            if current != text:
                print(f"{args.out} is stale; run `python scripts/roles.py lock`.", file=sys.stderr)
                raise SystemExit(1)
            print(f"{args.out} is up to date.")
            return
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        line = sizes()
        print(json.dumps(line))
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(line, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
