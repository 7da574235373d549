"""What every real-browser test shares: its markers (skipped cleanly without Chromium)."""

import pytest

from benchmarks.browser import chromium_paths

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(None in chromium_paths(),
                       reason="chromium and chromedriver are needed (apt install chromium "
                              "chromium-driver)"),
]
