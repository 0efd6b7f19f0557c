"""Serve a trained model over HTTP: POST /predict, GET /health and the page at GET /.

python serve.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt [port=8000] [host=127.0.0.1]
python serve.py ckpt_path=exported/                  # a bundle from scripts/export_model.py
python serve.py ckpt_path=logs/train/runs/<run>/baseline   # model=tfidf_lr (no explanations)
python serve.py ckpt_path=exported/ workers=2             # two processes on one port
"""

import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fakenews_pl import errors  # noqa: E402
from fakenews_pl.serving.predictors import is_model_dir, load_predictor  # noqa: E402
from fakenews_pl.training import config  # noqa: E402

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # fakenews_pl.serving.observe.MULTIPROC_ENV
LIMITS = ("max_texts", "max_body_bytes", "max_text_chars", "explain_top", "max_explain_work")


def serve(cfg: DictConfig) -> None:
    """Check the config, load the model once, then serve it until SIGTERM or Ctrl-C."""
    with ExitStack() as stack:
        if cfg.workers != 1 and not os.environ.get(MULTIPROC_ENV):
            # Metrics of several workers add up through files in this directory, which
            # prometheus-client reads when it is imported (by the server module, below).
            os.environ[MULTIPROC_ENV] = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="fakenews_pl_metrics_")
            )
            stack.callback(os.environ.pop, MULTIPROC_ENV, None)  # not left naming a removed dir
        _serve(cfg)


def _serve(cfg: DictConfig) -> None:
    from fakenews_pl.serving import server

    # A signal while the model loads ends it quietly too (status 0), as one while it serves.
    with server.until_stopped():
        _load_and_serve(cfg, server)


def _load_and_serve(cfg: DictConfig, server: ModuleType) -> None:
    config.check_checkpoint_and_device(cfg, is_model_dir)
    limits = {key: cfg[key] for key in LIMITS}
    hosts = cfg.allowed_hosts
    hosts = server.default_allowed_hosts(cfg.host) if hosts is None else list(hosts)
    settings = {**limits, "request_timeout_s": cfg.request_timeout_s, "allowed_hosts": hosts}
    server.check_settings(
        {**settings, "host": cfg.host, "port": cfg.port, "threads": cfg.threads,
         "shutdown_grace_s": cfg.shutdown_grace_s, "workers": cfg.workers}
    )  # fmt: skip
    if cfg.workers != 1 and str(cfg.device) != "cpu":
        raise errors.ConfigError(
            f"workers={cfg.workers} with device={cfg.device}: the workers are forks, and CUDA "
            "cannot be used in a fork of a process that set it up; use workers=1 or device=cpu"
        )
    if cfg.workers != 1:
        import torch

        # The workers are forks of this process, and an OpenMP team's threads do not survive
        # fork(): a worker would hang in its first parallel op. So this process, which only
        # loads the model and then supervises, computes on one thread.
        torch.set_num_threads(1)
    # Every forward pass runs on `threads` intra-op threads (fakenews_pl.threads).
    predictor = load_predictor(cfg.ckpt_path, cfg.device, threads=cfg.threads)
    tokenizer = getattr(getattr(predictor, "embedding", None), "tokenizer", None)
    if tokenizer is not None:  # its character tables (~0.5 s), before the port opens
        tokenizer.encode(["warm up"])
    # The model's file or directory name: /health tells a client which model, not local paths.
    name = Path(str(cfg.ckpt_path)).name
    app = server.create_app(predictor, model_name=name, access_log=cfg.access_log, **settings)
    server.serve(
        app, cfg.host, cfg.port, workers=cfg.workers, access_log=cfg.access_log,
        shutdown_grace_s=cfg.shutdown_grace_s,
    )  # fmt: skip


@hydra.main(version_base="1.3", config_path="conf", config_name="serve.yaml")
@errors.reports_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point: serve a checkpoint."""
    serve(cfg)


if __name__ == "__main__":
    errors.run(main)
