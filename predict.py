"""Classify new text with a trained checkpoint.

python predict.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt text="A headline"
python predict.py ckpt_path=... input=new.csv output=scored.csv [text_column=title]
python predict.py ckpt_path=exported/ text="A headline" explain=true   # a bundle; top tokens
python predict.py ckpt_path=logs/train/runs/<run>/baseline text="A headline"  # model=tfidf_lr
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fakenews_pl import errors, temporaries  # noqa: E402
from fakenews_pl.serving.predictors import is_model_dir, load_predictor  # noqa: E402
from fakenews_pl.training import config  # noqa: E402


def predict(cfg: DictConfig) -> list[str]:
    """Print the label and class probabilities of `cfg.text` (with `explain`, its most
    influential tokens), or score `cfg.input`."""
    config.check_predict_config(cfg, is_model_dir)
    from fakenews_pl.serving.classifier import alike_notes, format_effects

    clf = load_predictor(cfg.ckpt_path, cfg.device)  # a saved baseline: text=... only
    if cfg.output:  # the model's own files, known once it is loaded
        temporaries.refuse_input_as_output(cfg.output, [clf.embedding.meta["path"]], "output")
    if cfg.text is not None:
        (probabilities,) = clf.predict_proba([str(cfg.text)])
        shares = ", ".join(
            f"{n} {p:.4f}" for n, p in zip(clf.class_names, probabilities, strict=True)
        )
        rule = f"{clf.class_names[1]} when P({clf.class_names[1]}) > {clf.threshold:.4f}"
        lines = [f"{clf.labels(probabilities[None])[0]} ({shares}; {rule})"]
        if cfg.explain:
            (effects,) = clf.explain([str(cfg.text)], cfg.explain_top)
            toward = f"+ toward {clf.class_names[1]}, - toward {clf.class_names[0]}"
            lines.append(f"top tokens ({toward}): {format_effects(effects, clf.oov_bucket)}")
            lines += alike_notes(clf, effects)
    else:
        top = cfg.explain_top if cfg.explain else 0
        rows = clf.predict_file(
            cfg.input, cfg.output, cfg.text_column, cfg.format, cfg.chunk_rows, explain=top
        )
        lines = [f"scored {rows:,} rows of {cfg.input} into {cfg.output}"]
    print("\n".join(lines))
    return lines


@hydra.main(version_base="1.3", config_path="conf", config_name="predict.yaml")
@errors.reports_user_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point: classify a text or a file."""
    predict(cfg)


if __name__ == "__main__":
    errors.run(main)
