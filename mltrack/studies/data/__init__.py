"""Dataset loaders: the real on-disk formats, plus offline stand-ins (design.md §7).

Real data comes through the frameworks' own loaders or from ``--data-dir``; when it is missing
and cannot be downloaded the error names the file and where to put it. ``synthetic`` data has
the real shapes and is learnable, for offline smoke runs.
"""

from mltrack.studies.data.core import ArrayDataset, DataCorrupt, DataUnavailable, fingerprint

__all__ = ["ArrayDataset", "DataCorrupt", "DataUnavailable", "fingerprint"]
