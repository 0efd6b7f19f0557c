"""Search the head's hyperparameters with Optuna; each trial is a train.py run.

python search.py                                  # hparams_search=head_optuna, demo data
python search.py hparams_search=head_optuna_f1 embedding=nnlm128 search.n_trials=40
python search.py search.workers=2                 # two worker processes on one study
python search.py search.storage=postgresql+psycopg://user@host/db   # a study in PostgreSQL

Rerun the same command to resume a killed search; run it again while it runs to add a worker.
Results in logs/search/<study_name>/: best_overrides.yaml (for train.py), best.yaml,
summary.csv/md/png, trials/<n>/.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fakenews_pl import errors  # noqa: E402
from fakenews_pl.training import search  # noqa: E402


def _train_overrides() -> list[str]:
    """The command line's overrides that train.py takes too (not the search's own)."""
    skip = ("hparams_search=", "search.", "+search.", "hydra.", "optimized_metric=")
    return [o for o in HydraConfig.get().overrides.task if not o.startswith(skip)]


@hydra.main(version_base="1.3", config_path="conf", config_name="search.yaml")
@errors.reports_user_errors
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: run, resume or join the study (search.workers processes); return
    the best value."""
    search.check_search_config(cfg)
    with search.worker_processes(cfg, str(Path(__file__).resolve()), sys.argv[1:]):
        study = search.run_search(cfg, HydraConfig.get().runtime.output_dir, _train_overrides())
    return search.best_value(study)


if __name__ == "__main__":
    errors.run(main)
