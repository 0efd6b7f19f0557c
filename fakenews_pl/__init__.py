"""fakenews_pl: the fake-news notebook's TF-Hub embedding models in PyTorch Lightning."""

__version__ = "0.1.0"

__all__ = ["Classifier"]


def __getattr__(name: str):
    """`fakenews_pl.Classifier`, imported on first use (torch and Lightning are heavy)."""
    if name == "Classifier":
        from fakenews_pl.serving.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'fakenews_pl' has no attribute {name!r}")
