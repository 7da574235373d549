"""CSV files that a spreadsheet opens as data, never as formulas (CSV / formula injection).

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a
formula by Excel, LibreOffice and Google Sheets (``=HYPERLINK(...)`` in a clinician's override
note, a clip named ``=cmd|...``). Every CSV pleura writes goes through :class:`SafeWriter` or
:class:`SafeDictWriter`, which prefix such a cell with a single quote, as OWASP recommends
(https://owasp.org/www-community/attacks/CSV_Injection); the spreadsheet then shows the text as
typed. Numbers stay numbers: ints and floats are never touched, and neither is a string that is a
plain decimal number (``"-0.5"``, ``"+3"``, ``"1e-4"``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""First characters a spreadsheet may read as a formula (OWASP's list, plus the full-width
forms that East Asian locales of Excel accept)."""

NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def safe_cell(value: Any) -> Any:
    """``value`` as it may go into a CSV cell: a formula-like text gets a leading ``'``.

    Args:
        value: any cell value; only ``str`` values are ever changed.

    Returns:
        ``value`` unchanged, or ``"'" + value`` when it is text that starts like a formula and is
        not a plain decimal number.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(value):
        return "'" + value
    return value


class SafeWriter:
    """``csv.writer`` whose rows go through :func:`safe_cell` (same arguments as csv.writer)."""

    def __init__(self, f, *args: Any, **kwargs: Any) -> None:
        self._w = csv.writer(f, *args, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._w.writerow([safe_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


class SafeDictWriter(csv.DictWriter):
    """``csv.DictWriter`` whose values (and header) go through :func:`safe_cell`."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({k: safe_cell(v) for k, v in rowdict.items()})

    def writerows(self, rowdicts: Iterable[Mapping[str, Any]]) -> None:
        for row in rowdicts:
            self.writerow(row)
