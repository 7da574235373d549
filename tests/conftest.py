"""Suite-wide test settings.

Hypothesis runs derandomised (examples derived from each test's source, not the clock), so a
property test either always passes or always fails on a given commit: CI never goes red by
chance. Explore new examples locally with ``--hypothesis-profile=explore``.
"""

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=2000)
settings.load_profile("ci")
