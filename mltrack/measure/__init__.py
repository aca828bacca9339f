"""What a run measures, with no store and no framework imported: the ledger's timing model,
the machine's fingerprint, precision vocabulary, FLOPs, hardware peaks and MFU, task metrics.
"""
