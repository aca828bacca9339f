"""The run and its journal: start_run, the journal, the writer process that delivers it
to MLflow, what may reach a store, how a run ends, distributed jobs as one run.
"""
