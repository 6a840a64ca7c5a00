"""Every role's README.md is the one scripts/role-readme writes from its argument specs, and the
specs' defaults are the ones defaults/main.yml sets (issue 6: the specs are the contract)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent for p in ROOT.glob("roles/*/meta/argument_specs.yml"))


def role_readme(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "role-readme"), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_readme_matches_argument_specs(role: Path) -> None:
    result = role_readme("--check", role)
    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_stale_readme(tmp_path: Path) -> None:
    role = tmp_path / "demo"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    short_description: Demo\n    options:\n"
        "      demo_enabled:\n        type: bool\n        default: true\n"
        "        description: Run it.\n"
    )
    (role / "defaults" / "main.yml").write_text("demo_enabled: true\n")
    (role / "README.md").write_text("# stale\n")
    stale = role_readme("--check", role)
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert role_readme(role).returncode == 0
    fresh = role_readme("--check", role)
    assert fresh.returncode == 0, fresh.stderr
    (role / "defaults" / "main.yml").write_text("demo_enabled: false\n")
    drift = role_readme("--check", role)
    assert drift.returncode == 1 and "differs from defaults/main.yml" in drift.stderr


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_role_has_its_switch_and_one_tagged_toggle_per_area(role: Path) -> None:
    """`<role>_enabled` gates everything, and every area's task file imported by tasks/main.yml
    is gated by a `<role>_<area>_enabled` of the specs and tagged `<area>` (issue 6: one toggle
    and tag per area)."""
    import yaml

    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())[
        "argument_specs"]["main"]["options"]
    assert options[f"{role.name}_enabled"]["default"] is True
    main = yaml.safe_load((role / "tasks" / "main.yml").read_text())
    assert [task["when"] for task in main] == [f"{role.name}_enabled | bool"]
    areas = [task for task in main[0]["block"] if "always" not in task.get("tags", [])
             and "import_tasks" in str(task)]
    assert areas, f"{role.name} has no areas"
    for task in areas:
        area = task["ansible.builtin.import_tasks"].removesuffix(".yml")
        toggle = f"{role.name}_{area}_enabled"
        assert task.get("when") == f"{toggle} | bool", f"{role.name}: {area} is not gated"
        assert options[toggle]["type"] == "bool"
        assert area in task.get("tags", []), f"{role.name}: the {area} import lacks its tag"


def test_readme_lists_suboptions() -> None:
    readme = (ROOT / "roles" / "ledger" / "README.md").read_text()
    assert "### `ledger_tenants`" in readme
    assert "#### `ledger_tenants[].key_file`" in readme
