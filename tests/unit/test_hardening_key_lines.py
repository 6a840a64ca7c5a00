"""The hardening role's hardening_key_lines module (login.defs in one call): what it rewrites,
what it keeps, and that a second pass changes nothing (the role's idempotence rests on it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    path = ROOT / "roles/hardening/library/hardening_key_lines.py"
    spec = importlib.util.spec_from_file_location("hardening_key_lines", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOGIN_DEFS = """\
# Password aging controls:
#PASS_MAX_DAYS\t1
PASS_MAX_DAYS\t99999
PASS_MIN_DAYS\t0
UMASK\t\t022
ENCRYPT_METHOD SHA512
"""


def test_rewrites_set_keys_appends_missing_keeps_the_rest() -> None:
    apply = load().apply
    settings = {"PASS_MAX_DAYS": "365", "UMASK": "027", "ENCRYPT_METHOD": "YESCRYPT",
                "YESCRYPT_COST_FACTOR": "8"}
    text, keys = apply(LOGIN_DEFS, settings, "\t")
    assert text.splitlines() == [
        "# Password aging controls:",
        "#PASS_MAX_DAYS\t1",  # a comment stays a comment
        "PASS_MAX_DAYS\t365",
        "PASS_MIN_DAYS\t0",  # not in the settings: kept as it was
        "UMASK\t027",
        "ENCRYPT_METHOD\tYESCRYPT",
        "YESCRYPT_COST_FACTOR\t8",
    ]
    assert keys == ["PASS_MAX_DAYS", "UMASK", "ENCRYPT_METHOD", "YESCRYPT_COST_FACTOR"]
    again, keys_again = apply(text, settings, "\t")
    assert again == text
    assert keys_again == []


def test_a_key_is_not_a_prefix_of_another() -> None:
    apply = load().apply
    text, keys = apply("SHA_CRYPT_MIN_ROUNDS 5000\n", {"SHA_CRYPT_MIN": "1"}, " ")
    assert text == "SHA_CRYPT_MIN_ROUNDS 5000\nSHA_CRYPT_MIN 1\n"
    assert keys == ["SHA_CRYPT_MIN"]
