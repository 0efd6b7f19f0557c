"""Classify new text with a trained checkpoint.

python predict.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt text="A headline"
python predict.py ckpt_path=... input=new.csv output=scored.csv [text_column=title]
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fakenews_pl import config, errors  # noqa: E402
from fakenews_pl.classifier import Classifier  # noqa: E402
from fakenews_pl.errors import ConfigError  # noqa: E402


def predict(cfg: DictConfig) -> list[str]:
    """Print the label and class probabilities of `cfg.text`, or score `cfg.input`."""
    if (cfg.text is None) == (cfg.input is None) or (cfg.input is not None) != bool(cfg.output):
        raise ConfigError("give text=... or both input=FILE.csv and output=OUT.csv")
    config.check_checkpoint_and_device(cfg)
    clf = Classifier.load(cfg.ckpt_path, cfg.device)
    if cfg.text is not None:
        (probabilities,) = clf.predict_proba([str(cfg.text)])
        shares = ", ".join(
            f"{n} {p:.4f}" for n, p in zip(clf.class_names, probabilities, strict=True)
        )
        line = f"{clf.labels(probabilities[None])[0]} ({shares})"
    else:
        rows = clf.predict_file(cfg.input, cfg.output, cfg.text_column, cfg.format, cfg.chunk_rows)
        line = f"scored {rows:,} rows of {cfg.input} into {cfg.output}"
    print(line)
    return [line]


@hydra.main(version_base="1.3", config_path="conf", config_name="predict.yaml")
@errors.reports_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point: classify a text or a file."""
    predict(cfg)


if __name__ == "__main__":
    main()
