"""Serve a trained model over HTTP: POST /predict, GET /health and the page at GET /.

python serve.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt [port=8000] [host=127.0.0.1]
python serve.py ckpt_path=exported/                  # a bundle from scripts/export_model.py
python serve.py ckpt_path=logs/train/runs/<run>/baseline   # model=tfidf_lr (no explanations)
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fakenews_pl import errors  # noqa: E402
from fakenews_pl.serving import server  # noqa: E402
from fakenews_pl.serving.predictors import is_model_dir, load_predictor  # noqa: E402
from fakenews_pl.training import config  # noqa: E402

LIMITS = ("max_texts", "max_body_bytes", "max_text_chars", "explain_top", "max_explain_work")


def serve(cfg: DictConfig) -> None:
    """Check the config, load the model once, then serve it until SIGTERM or Ctrl-C."""
    config.check_checkpoint_and_device(cfg, is_model_dir)
    limits = {key: cfg[key] for key in LIMITS}
    hosts = cfg.allowed_hosts
    hosts = server.default_allowed_hosts(cfg.host) if hosts is None else list(hosts)
    settings = {**limits, "request_timeout_s": cfg.request_timeout_s, "allowed_hosts": hosts}
    server.check_settings(
        {**settings, "host": cfg.host, "port": cfg.port, "threads": cfg.threads,
         "shutdown_grace_s": cfg.shutdown_grace_s}
    )  # fmt: skip
    # Every forward pass runs on `threads` intra-op threads (fakenews_pl.threads).
    predictor = load_predictor(cfg.ckpt_path, cfg.device, threads=cfg.threads)
    # The model's file or directory name: /health tells a client which model, not local paths.
    name = Path(str(cfg.ckpt_path)).name
    app = server.create_app(predictor, model_name=name, access_log=cfg.access_log, **settings)
    server.serve(
        app, cfg.host, cfg.port, access_log=cfg.access_log, shutdown_grace_s=cfg.shutdown_grace_s
    )


@hydra.main(version_base="1.3", config_path="conf", config_name="serve.yaml")
@errors.reports_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point: serve a checkpoint."""
    serve(cfg)


if __name__ == "__main__":
    errors.run(main)
