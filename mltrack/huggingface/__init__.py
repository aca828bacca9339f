"""mltrack for Hugging Face ``transformers.Trainer``: a ``TrainerCallback`` (``callback.py``)
that feeds an mltrack run the same per-epoch ledger as the Keras and PyTorch adapters:

    with mltrack.start_run("my-experiment") as run:
        trainer = Trainer(model=model, args=TrainingArguments(..., eval_strategy="epoch",
                          logging_strategy="epoch", report_to="none"), ...,
                          callbacks=[MltrackCallback(run)])
        trainer.train()
"""

from mltrack.huggingface.callback import MltrackCallback

__all__ = ["MltrackCallback"]
