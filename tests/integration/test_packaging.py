"""The wheel carries what the installed commands load: the eBPF source and the units.

Built with pip from a copy of the checkout (setuptools writes build/ and
*.egg-info into the tree it builds), installed into a directory of its own,
and asked from there where the enforcer's source is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ledger_helpers import REPO

SOURCES = ("vantio_appliance/bpf/enforcer.c", "vantio_appliance/data/systemd/"
           "vantio-enforcer.service", "vantio_appliance/data/systemd/vantio-ledger.service")


def test_the_wheel_carries_the_bpf_source_and_the_enforcer_loads_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*_cache", ".hypothesis", "build", "*.egg-info", "__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    [wheel] = (tmp_path / "dist").glob("vantio_appliance-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in SOURCES:
            assert name in names, sorted(n for n in names if not n.endswith(".py"))
        c_source = z.read(SOURCES[0])
    assert c_source == (REPO / "bpf" / "enforcer.c").read_bytes()

    site = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                          "-q", "--target", str(site), str(wheel)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "-c", "from vantio_appliance import enforcer; "
                          "print(enforcer.BPF_SOURCE)"], capture_output=True, text=True,
                         timeout=60, check=False, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr
    loaded = Path(out.stdout.strip())
    assert loaded.is_relative_to(site) and loaded.read_bytes() == c_source
