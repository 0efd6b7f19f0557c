"""A trained model at work, without Lightning: the `Classifier`, exported bundles, ONNX, the
export formats and the HTTP server with its page."""
