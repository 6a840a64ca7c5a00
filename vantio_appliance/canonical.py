"""RFC 8785 (JCS) canonical JSON, for the subset the ledger accepts.

The subset: objects, arrays, strings, booleans and integers; no floats.
Within it, RFC 8785 comes down to sorted keys, no white space, the shortest
string escapes (``\\b \\t \\n \\f \\r \\" \\\\`` and ``\\u00xx`` with lower-case
hex for the other control characters) and UTF-8 for everything else, which is
exactly what msgspec emits with ``order="sorted"``. Key order is by UTF-16
code units in RFC 8785 and by code points here: the two agree for the ASCII
keys the record whitelist allows, so the whitelist keeps this encoding exact.

Integers are written as exact decimal digits, also above 2**53 (the
nanosecond clocks need 61 bits), where RFC 8785's ECMAScript number form
would round: a deliberate, documented deviation (docs/formats.md).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

_ENCODER: Final = msgspec.json.Encoder(order="sorted")
_DECODER: Final = msgspec.json.Decoder()


class CanonicalError(ValueError):
    """A line is not the canonical encoding of a JSON value in our subset."""


def encode(value: Any) -> bytes:
    """The canonical bytes of ``value`` (no trailing newline)."""
    return _ENCODER.encode(value)


def encode_lines(values: list[Any]) -> bytes:
    """The canonical lines of ``values``, each ending in a newline, in one buffer."""
    return _ENCODER.encode_lines(values)


def decode(line: bytes) -> Any:
    """Parse ``line`` and insist that it is already canonical.

    Re-encoding and comparing rejects duplicate keys, white space, unsorted
    keys and non-shortest escapes in one step; floats are refused by the
    record schema, which checks every number's type.
    """
    try:
        value = _DECODER.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise CanonicalError(f"not JSON: {exc}") from None
    if _ENCODER.encode(value) != line:
        raise CanonicalError("not in canonical form (RFC 8785)")
    return value
