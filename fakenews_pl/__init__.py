"""fakenews_pl: the fake-news notebook's TF-Hub embedding models in PyTorch Lightning."""

__version__ = "0.1.0"
