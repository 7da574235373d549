"""Where the tests find the shared real data (`shared/data`: POCUS clips, a device screen).

`shared/` sits next to the repository (`../shared/data`); `PLEURA_SHARED_DATA` points elsewhere,
e.g. on a CI machine that keeps the data in another place. Tests that need it skip cleanly with
the path they looked at when it is absent.
"""

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("PLEURA_SHARED_DATA")
            or Path(__file__).resolve().parents[2] / "shared" / "data")
POCUS = DATA / "pocus"
needs_pocus = pytest.mark.skipif(not (POCUS / "MANIFEST.csv").is_file(),
                                 reason=f"{POCUS} absent (set PLEURA_SHARED_DATA)")
