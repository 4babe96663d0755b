"""The package version, from the git tag (standard library only).

  v1.2.0 on HEAD, clean tree     -> 1.2.0
  v1.3.0rc1 on HEAD              -> 1.3.0rc1   (a pre-release: TestPyPI)
  3 commits after v1.2.0         -> 1.2.0.post3.dev0+g1a2b3c4
  no v* tag yet                  -> 0.1.0.dev<commits>+g1a2b3c4
  uncommitted changes            -> ... +g1a2b3c4.dirty

Order: $INT4MM_VERSION, then `git describe` when ROOT is itself the top of a
git checkout, then the version an earlier build wrote into
int4mm/_build_version.py (how an sdist, or a copied tree without .git,
builds offline), else 0.1.0.dev0.  `python tools/version.py` prints it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FALLBACK = "0.1.0.dev0"
_PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9.]+)?$")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()


def from_git() -> str | None:
    try:
        if Path(_git("rev-parse", "--show-toplevel")).resolve() != ROOT:
            return None  # an sdist unpacked inside someone else's repository
        commit = _git("rev-parse", "--short=7", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    local = f"g{commit}" + (".dirty" if dirty else "")
    try:
        described = _git("describe", "--tags", "--long", "--match", "v[0-9]*")
    except subprocess.SubprocessError:
        try:
            count = _git("rev-list", "--count", "HEAD")
        except subprocess.SubprocessError:
            count = "0"
        return f"{FALLBACK.rsplit('.dev', 1)[0]}.dev{count}+{local}"
    m = re.fullmatch(r"v(.+)-(\d+)-g[0-9a-f]+", described)
    if not m:
        return None
    tag, distance = m.group(1), int(m.group(2))
    if distance == 0 and not dirty:
        return tag
    if distance == 0:
        return f"{tag}+{local}"
    return f"{tag}.post{distance}.dev0+{local}"


def from_build_file() -> str | None:
    path = ROOT / "int4mm" / "_build_version.py"
    if path.is_file():
        m = re.search(r"^version = ['\"]([^'\"]+)['\"]", path.read_text(), re.MULTILINE)
        if m:
            return m.group(1)
    return None


def version() -> str:
    env = os.environ.get("INT4MM_VERSION", "").strip()
    value = env.removeprefix("v") or from_git() or from_build_file() or FALLBACK
    if not _PEP440.match(value):
        raise ValueError(f"int4mm version {value!r} is not a PEP 440 version (tag as v1.2.3)")
    return value


def is_prerelease(value: str) -> bool:
    return bool(re.search(r"(a|b|rc|\.dev)\d+", value))


if __name__ == "__main__":
    v = version()
    if sys.argv[1:] == ["--prerelease"]:
        print("true" if is_prerelease(v) else "false")
    else:
        print(v)
