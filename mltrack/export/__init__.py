"""Model export and its round-trip check: the seeds' formats, the MLflow pyfunc model, the verifier
process."""
