"""Kubernetes resource quantities (`"500m"`, `"1.5"`, `2`, `"1Gi"`, `"1e3"`) as exact decimals.

The API server parses the quantities of `spec.resources` only when the operator applies the
StatefulSet, far from the user's edit; parsing them here lets the spec be rejected up front with
a clear message, and lets the builders derive settings (the node's search threads) from them.
The grammar is the one documented for `resource.Quantity` (k8s.io/apimachinery):
`<signedNumber><suffix>`, the suffix a binary SI (`Ki`..`Ei`), decimal SI (`n u m k M G T P E`)
or decimal exponent (`e3`, `E-2`: an int64 after the `e`) suffix. Arithmetic is `Decimal` from
the text, never a float, so `"2500m"` is exactly 2.5.
"""

from __future__ import annotations

import re
from decimal import ROUND_UP, Context, Decimal

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>[KMGTPE]i)|(?P<decimal>[numkMGTPE])|[eE](?P<exponent>[+-]?[0-9]+))?"
)
_BINARY_POWERS = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_EXPONENTS = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_INT64_MAX = 2**63 - 1
# Kubernetes keeps quantities within int64 and rounds them up to nano units.
MAX_QUANTITY = Decimal(_INT64_MAX)
NANO = Decimal("1E-9")


class InvalidQuantityError(ValueError):
    """The value is not a Kubernetes quantity."""


def parse_quantity(value: object) -> Decimal:
    """The value of a quantity given as a string or a JSON number, as Kubernetes reads it.

    Surrounding whitespace is ignored, as the API server's JSON decoding ignores it; the result
    is capped at 2^63-1 in magnitude and rounded up (away from zero) to 1n, as documented for
    `resource.Quantity`. Raises `InvalidQuantityError` for anything else (booleans,
    `"2 cores"`, `"1e3m"`, NaN).
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidQuantityError(f"{value!r} is not a quantity (a string or a number)")
    match = _QUANTITY.fullmatch(str(value).strip())
    if match is None:
        raise InvalidQuantityError(f"{value!r} is not a Kubernetes quantity")
    mantissa = Decimal(match["number"])
    exponent = _DECIMAL_EXPONENTS.get(match["decimal"] or "", 0)
    if match["exponent"]:
        exponent = _int64(match["exponent"], value)
    if mantissa.is_zero():
        return Decimal(0)
    # Enough digits that no step below rounds before the final round-up to nano units.
    exact = Context(prec=len(match["number"]) + 40, rounding=ROUND_UP)
    if match["binary"]:
        mantissa = exact.multiply(mantissa, 2 ** _BINARY_POWERS[match["binary"]])
    magnitude = mantissa.adjusted() + exponent  # the power of ten of the leading digit
    if magnitude > len(str(_INT64_MAX)):
        return MAX_QUANTITY.copy_sign(mantissa)
    if magnitude < -9:
        return NANO.copy_sign(mantissa)
    amount = mantissa.scaleb(exponent, context=exact)
    if abs(amount) > MAX_QUANTITY:
        return MAX_QUANTITY.copy_sign(mantissa)
    return amount.quantize(NANO, context=exact)


def _int64(digits: str, value: object) -> int:
    """The decimal exponent: Kubernetes reads it as a signed 64-bit integer."""
    if len(digits.lstrip("+-").lstrip("0")) > len(str(_INT64_MAX)):
        raise InvalidQuantityError(f"{value!r}: the exponent is out of range")
    number = int(digits)
    if not -_INT64_MAX - 1 <= number <= _INT64_MAX:
        raise InvalidQuantityError(f"{value!r}: the exponent is out of range")
    return number
