"""The five reference studies' own models, recipes and data loaders (``experiments/``).

Only ``experiments/``, ``benchmarks/`` and the tests import this package; the library
(``mltrack.tracking``, ``mltrack.measure``, the adapters) never does.
"""
