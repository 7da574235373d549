"""pleura streaming runtime: sources, wire protocol, capture, worker, supervisor, CLI.

Never imports torch: a bedside install is ``pip install pleura`` without the ``[train]`` extra.
"""
