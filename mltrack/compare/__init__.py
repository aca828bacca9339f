"""``mltrack compare``: reading many runs, the comparisons that say whether a difference is
real, tables, plots, scaling and the seeds' published figures beside the measured ones.
"""
