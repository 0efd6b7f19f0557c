"""Write the training report (metrics.json, tables, plots) for any checkpoint.

python evaluate.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt
python evaluate.py ckpt_path=... data=csv data.files=[other.csv]
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fakenews_pl import errors  # noqa: E402
from fakenews_pl.training import config  # noqa: E402


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Load the checkpoint and its data, predict train and test, write the report."""
    config.check_eval_config(cfg)
    from pytorch_lightning import seed_everything  # Lightning, once the config is known good

    from fakenews_pl.data import demo
    from fakenews_pl.training import pipeline

    seed_everything(cfg.seed, workers=True, verbose=False)
    model, datamodule = pipeline.load_checkpoint(cfg)
    inputs = [model.hparams.embedding_path, *datamodule.paths]
    synthetic = demo.uses_demo(cfg.paths.demo_dir, inputs)
    info = {"checkpoint": cfg.ckpt_path}
    recorded = pipeline.checkpoints.read(cfg.ckpt_path).get(pipeline.checkpoints.DECISION)
    return pipeline.write_report(
        model, datamodule, cfg.paths.output_dir, info, synthetic,
        decision_cfg=cfg.decision, recorded=recorded,
    )  # fmt: skip


@hydra.main(version_base="1.3", config_path="conf", config_name="eval.yaml")
@errors.reports_user_errors
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: evaluate a checkpoint, return its test accuracy."""
    metrics = evaluate(cfg)
    return metrics.get("test/accuracy")


if __name__ == "__main__":
    errors.run(main)
