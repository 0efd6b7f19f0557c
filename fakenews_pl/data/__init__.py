"""Labelled texts -> batches: reading and checking CSV files (`corpus`), the synthetic demo,
what a batch holds (`batches`) and the LightningDataModule (`datamodule`)."""
