"""Text -> vectors exactly as a TF-Hub text-embedding module computes them: its tokenizer, its
pooling, the converted artifact on disk, the conversion from a SavedModel and the export back
(the only users of TensorFlow, imported lazily)."""
