"""Train the notebook's classifier and write its report into the Hydra run dir.

python train.py                                   # synthetic demo, no download
python train.py experiment=notebook_frozen embedding=nnlm128
python train.py trainable=true model.sparse_embedding=true trainer=ddp_cpu
"""

import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from pytorch_lightning import seed_everything  # noqa: E402

from fakenews_pl import errors  # noqa: E402
from fakenews_pl.training import config, pipeline  # noqa: E402


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then report on train and test: (metrics.json's content, the objects built).

    Only rank 0 reports; other ranks return empty metrics.
    """
    started = time.perf_counter()
    config.check_train_config(cfg)
    seed_everything(cfg.seed, workers=True, verbose=False)
    pipeline.clean_stale_temporaries(cfg)
    synthetic = pipeline.prepare_demo(cfg)
    embedding_path = pipeline.ensure_embedding(cfg.embedding)
    datamodule = pipeline.build_datamodule(cfg.data, embedding_path)
    model = pipeline.build_model(cfg.model, datamodule)
    ckpt_path = pipeline.resolve_ckpt_path(cfg)
    if ckpt_path is not None:  # before the Trainer: a refusal is the only line printed
        pipeline.check_resume(ckpt_path, model, datamodule)
    trainer = pipeline.build_trainer(cfg, model)
    pipeline.fit(trainer, model, datamodule, ckpt_path)
    objects = {"datamodule": datamodule, "model": model, "trainer": trainer}
    if not trainer.is_global_zero:
        return {}, objects
    pipeline.refuse_divergence(model, cfg.paths.output_dir)
    reported = pipeline.weights_for_report(trainer, model, cfg.report_on)
    info = {"weights": pipeline.REPORT_ON[cfg.report_on]}
    metrics = pipeline.write_report(reported, datamodule, cfg.paths.output_dir, info, synthetic)
    pipeline.write_run_info(cfg, trainer, started)
    return metrics, {**objects, "reported_model": reported}


@hydra.main(version_base="1.3", config_path="conf", config_name="train.yaml")
@errors.reports_user_errors
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: train, report, return the metric a sweep optimizes."""
    metrics, _ = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    errors.run(main)
