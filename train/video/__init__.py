"""Video score: uninorm aggregation of frame probabilities (Roy et al. 2020, section 2).

``uninorm_torch`` is the learnable twin of :mod:`engines.uninorm`; ``train`` fits the four
neutral elements with cross-validation; ``evaluate`` prints Tables II and III.
"""
