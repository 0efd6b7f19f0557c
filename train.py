"""Train the notebook's classifier and write its report into the Hydra run dir.

python train.py                                   # synthetic demo, no download
python train.py experiment=notebook_frozen embedding=nnlm128
python train.py trainable=true model.table_optimizer=lazy trainer=ddp_cpu
"""

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fakenews_pl import errors  # noqa: E402
from fakenews_pl.training import config  # noqa: E402


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Check the config, then fit and report (`pipeline.train`): (metrics.json's content, the
    objects built). Only rank 0 reports; other ranks return empty metrics."""
    config.check_train_config(cfg)
    from fakenews_pl.training import pipeline  # Lightning, once the config is known good

    return pipeline.train(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="train.yaml")
@errors.reports_user_errors
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: train, report, return the metric a sweep optimizes."""
    metrics, _ = train(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    errors.run(main)
