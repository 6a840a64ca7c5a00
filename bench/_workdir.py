"""The benchmarks' work directories: where they go, how they are removed, what ran.

Shared by every script in bench/: a run never works inside the checkout, and
everything it creates is removed with its +a/+i flags cleared first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from vantio_appliance._internal import osutil

REPO = Path(__file__).resolve().parent.parent

def clear_flags(root: Path) -> None:
    """`chattr -R -ia root`, without following symlinks."""
    if not root.exists():
        return
    flags = osutil.FS_IMMUTABLE_FL | osutil.FS_APPEND_FL
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, "."]:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            with contextlib.suppress(OSError):
                if (osutil.path_flags(path) or 0) & flags:
                    osutil.set_path_flags(path, 0, flags)


def remove(root: Path) -> None:
    clear_flags(root)
    shutil.rmtree(root, ignore_errors=True)


def default_base() -> Path:
    """The system temp dir: never the checkout (a `git add -A` must not pick up a run)."""
    return Path(tempfile.gettempdir())

def checkout() -> str:
    """The git state of the code measured (others may be editing it)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.strip() or "unknown"


def filesystem_of(path: Path) -> str:
    """'ext4 on /dev/vda' for the mount holding ``path`` (best effort)."""
    best = ("", "?", "?")
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            inside = str(path).startswith(mnt.rstrip("/") + "/") or str(path) == mnt
            if inside and len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    return f"{best[1]} on {best[2]}"
