"""Training with Lightning and Hydra: the LightningModule, fused epochs, callbacks,
checkpoints, the pipeline train.py and every search trial run, config checks, reports,
sweep summaries and the Optuna search."""
