"""FakeNewsClassifier: layout, Keras init, optimizers, checkpoints, strategy checks."""

import shutil
from pathlib import Path

import pytest
import torch
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

from fakenews_pl.errors import ConfigError, UserError
from fakenews_pl.hub import artifact
from fakenews_pl.nn.optim import KerasAdam, RowSparseAdam, TouchedRowAdam
from fakenews_pl.training.model import FakeNewsClassifier, check_strategy


def make_model(embedding: Path, **kwargs) -> FakeNewsClassifier:
    return FakeNewsClassifier(str(embedding), class_names=["Fake", "True"], **kwargs)


def test_hparams_hold_path_and_sizes_not_tensors(demo_assets: dict) -> None:
    with pytest.warns(UserWarning, match="has dim 32; using 32"):  # the config's dim is advisory
        model = make_model(demo_assets["embedding"], embedding_dim=999)
    assert model.hparams.embedding_dim == model.embedding.dim == 32
    assert model.hparams.embedding_rows == model.embedding.num_rows
    assert not any(isinstance(v, torch.Tensor) for v in model.hparams.values())
    with pytest.raises(UserError, match="not the embedding"):
        make_model(demo_assets["embedding"], embedding_rows=model.embedding.num_rows + 1)


def test_frozen_model_optimizes_the_head_with_keras_adam(demo_assets: dict) -> None:
    model = make_model(demo_assets["embedding"])
    (optimizer,) = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    params = optimizer.param_groups[0]["params"]
    assert {id(p) for p in params} == {id(p) for p in model.head.parameters()}
    assert optimizer.defaults["lr"] == 1e-4 and optimizer.defaults["eps"] == 1e-7
    assert not model.embedding.weight.requires_grad


def test_finetuning_puts_the_table_in_the_exact_touched_row_adam(demo_assets: dict) -> None:
    model = make_model(demo_assets["embedding"], trainable=True)
    head_opt, table_opt = model.configure_optimizers()
    assert type(table_opt) is TouchedRowAdam and table_opt.defaults["eps"] == 1e-7
    assert table_opt.param_groups[0]["params"] == [model.embedding.weight]
    assert model.embedding.bag.sparse  # row gradients
    assert {id(p) for p in head_opt.param_groups[0]["params"]} == {
        id(p) for p in model.head.parameters()
    }
    reference = make_model(demo_assets["embedding"], trainable=True, table_optimizer="dense")
    _, table_opt = reference.configure_optimizers()
    assert type(table_opt) is torch.optim.Adam and not reference.embedding.bag.sparse


def test_sparse_finetuning_uses_sparse_adam_on_sparse_gradients(demo_assets: dict) -> None:
    model = make_model(demo_assets["embedding"], trainable=True, table_optimizer="lazy")
    head_opt, table_opt = model.configure_optimizers()
    assert not model.automatic_optimization
    assert isinstance(table_opt, torch.optim.SparseAdam)
    assert table_opt.param_groups[0]["params"] == [model.embedding.weight]
    assert isinstance(head_opt, torch.optim.Adam)
    ids, offsets = model.embedding.encode(["Officials announce a plan", "SHOCKING twins"])
    model({"ids": ids, "offsets": offsets}).sum().backward()
    assert model.embedding.weight.grad.is_sparse


def test_pooled_and_token_batches_give_the_same_logits(demo_assets: dict) -> None:
    model = make_model(demo_assets["embedding"]).eval()
    texts = ["Officials in Millbrook announce a tax review", "SHOCKING Ava Marlow secretly married"]
    ids, offsets = model.embedding.encode(texts)
    pooled = model.embedding(ids, offsets)
    from_tokens = model({"ids": ids, "offsets": offsets})
    assert torch.equal(model({"pooled": pooled}), from_tokens)
    assert torch.equal(model.predict_proba(texts), torch.sigmoid(from_tokens))


def test_frozen_checkpoint_leaves_the_table_out_and_restores_it(
    demo_assets: dict, tmp_path: Path
) -> None:
    model = make_model(demo_assets["embedding"])
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("net.embedding.") for k in checkpoint["state_dict"])
    trimmed = dict(checkpoint["state_dict"])
    fresh = make_model(demo_assets["embedding"])
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])  # strict: nothing missing
    assert torch.equal(fresh.embedding.weight, model.embedding.weight)
    assert torch.equal(fresh.head[0].weight, model.head[0].weight)
    # Another artifact at the path is refused, not silently used.
    altered = tmp_path / "altered"
    shutil.copytree(demo_assets["embedding"], altered)
    meta = artifact.read_meta(altered)
    keep = {k: meta[k] for k in ("source", "oov_buckets", "recipe", "combiner")}
    vocab = artifact.read_vocab(altered / artifact.VOCAB_FILE)
    with artifact.atomic_directory(altered, overwrite=True) as tmp:
        artifact.write_artifact(tmp, fresh.embedding.weight.detach() * 2, vocab, keep)
    other = make_model(altered)
    with pytest.raises(UserError, match="not the embedding this checkpoint was trained with"):
        other.on_load_checkpoint({**checkpoint, "state_dict": trimmed})


def test_trainable_checkpoint_keeps_the_table(demo_assets: dict) -> None:
    """Without the touched-row optimizer (lazy or dense Adam) the whole table is saved."""
    model = make_model(demo_assets["embedding"], trainable=True, table_optimizer="dense")
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    table = [v for k, v in checkpoint["state_dict"].items() if k.startswith("net.embedding.")]
    assert any(torch.equal(v, model.embedding.weight) for v in table)


def test_sparse_gradients_need_gloo() -> None:
    check_strategy(True, SingleDeviceStrategy(torch.device("cpu")))
    check_strategy(True, DDPStrategy(process_group_backend="gloo"))
    check_strategy(False, DDPStrategy(process_group_backend="nccl"))  # dense: anything goes
    with pytest.raises(ConfigError, match="gloo.*'nccl'"):
        check_strategy(True, DDPStrategy(process_group_backend="nccl"))
    # No backend given: Lightning picks NCCL for CUDA devices.
    on_gpus = DDPStrategy(parallel_devices=[torch.device("cuda", 0), torch.device("cuda", 1)])
    with pytest.raises(ConfigError, match="'nccl'"):
        check_strategy(True, on_gpus)

    class OtherDDP(DDPStrategy):  # e.g. DeepSpeed, which subclasses DDPStrategy
        pass

    with pytest.raises(ConfigError, match="OtherDDP"):
        check_strategy(True, OtherDDP(process_group_backend="gloo"))


# ---------------------------------------------------------------- model.optimizer=keras_adam


def test_keras_adam_option_puts_every_parameter_in_kerass_arithmetic(demo_assets: dict) -> None:
    embedding = demo_assets["embedding"]
    (head_opt,) = make_model(embedding, optimizer="keras_adam").configure_optimizers()
    assert type(head_opt) is KerasAdam and head_opt.defaults["eps"] == 1e-7
    _, table_opt = make_model(
        embedding, trainable=True, optimizer="keras_adam"
    ).configure_optimizers()
    assert type(table_opt) is TouchedRowAdam and table_opt.arithmetic == "keras"
    dense = make_model(embedding, trainable=True, table_optimizer="dense", optimizer="keras_adam")
    _, table_opt = dense.configure_optimizers()
    assert type(table_opt) is KerasAdam and table_opt.defaults["row_gradients"]
    lazy = make_model(embedding, trainable=True, table_optimizer="lazy", optimizer="keras_adam")
    head_opt, table_opt = lazy.configure_optimizers()  # SparseAdam is not the notebook's
    assert type(head_opt) is KerasAdam and type(table_opt) is RowSparseAdam
    _, table_opt = make_model(embedding, trainable=True).configure_optimizers()
    assert table_opt.arithmetic == "torch"  # the default is unchanged
    with pytest.raises(ConfigError, match="model.optimizer='adamw'"):
        make_model(embedding, optimizer="adamw")


def test_the_notebook_experiments_use_kerass_arithmetic(compose_train, tmp_path: Path) -> None:
    assert compose_train(tmp_path / "default").model.optimizer == "adam"
    for experiment in ("notebook_frozen", "notebook_finetune"):
        cfg = compose_train(tmp_path / experiment, f"experiment={experiment}")
        assert cfg.model.optimizer == "keras_adam", experiment
    # The grid's neural cells (conf/cell/), as notebook_grid sweeps them.
    for cell in ("gnews20_frozen", "wiki250_finetune"):
        cfg = compose_train(tmp_path / cell, "experiment=notebook_grid", f"cell={cell}")
        assert cfg.model.optimizer == "keras_adam", cell


def _trained(compose_train, root_script, out: Path, *overrides: str) -> tuple[dict, dict]:
    cfg = compose_train(
        out,
        "model.optimizer=keras_adam",
        "trainer.limit_train_batches=null",
        "trainer.max_epochs=2",
        *overrides,
    )
    return root_script("train").train(cfg)


def _assert_same_weights(a: dict, b: dict) -> None:
    for (key, x), (_, y) in zip(
        a["model"].state_dict().items(), b["model"].state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), key


@pytest.mark.slow
@pytest.mark.parametrize("trainable", [False, True])
def test_keras_adam_fused_epochs_train_exactly_like_lightning_steps(
    trainable: bool, compose_train, root_script, tmp_path: Path
) -> None:
    """Both training paths (HeadStep + KerasAdam.update per minibatch inside one Lightning
    step, and autograd + KerasAdam.step per Lightning step) give the same weights."""
    runs = {
        fused: _trained(
            compose_train,
            root_script,
            tmp_path / str(fused),
            f"data.fuse_train_batches={fused}",
            f"trainable={str(trainable).lower()}",
        )
        for fused in (True, False)
    }
    (fused_metrics, fused), (plain_metrics, plain) = runs[True], runs[False]
    assert fused["trainer"].num_training_batches == 1 < plain["trainer"].num_training_batches
    assert isinstance(fused["trainer"].optimizers[0], KerasAdam)
    assert fused_metrics["test/accuracy"] == plain_metrics["test/accuracy"]
    _assert_same_weights(fused, plain)
    # ... and not those of torch's Adam.
    _, adam = _trained(
        compose_train,
        root_script,
        tmp_path / "adam",
        "model.optimizer=adam",
        f"trainable={str(trainable).lower()}",
    )
    assert not torch.equal(adam["model"].head[0].weight, fused["model"].head[0].weight)


@pytest.mark.slow
def test_keras_adam_touched_rows_train_exactly_like_the_whole_table(
    compose_train, root_script, tmp_path: Path
) -> None:
    runs = {
        dense: _trained(
            compose_train,
            root_script,
            tmp_path / str(dense),
            "trainable=true",
            f"model.table_optimizer={'dense' if dense else 'exact'}",
        )
        for dense in (False, True)
    }
    (ours_metrics, ours), (dense_metrics, dense) = runs[False], runs[True]
    assert ours_metrics == dense_metrics and ours["model"].history == dense["model"].history
    _assert_same_weights(ours, dense)


@pytest.mark.slow
def test_keras_adam_resumes_from_last_ckpt_exactly(
    compose_train, root_script, tmp_path: Path
) -> None:
    _, whole = _trained(compose_train, root_script, tmp_path / "whole", "trainable=true")
    _trained(
        compose_train, root_script, tmp_path / "first", "trainable=true", "trainer.max_epochs=1"
    )
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["hyper_parameters"]["optimizer"] == "keras_adam"
    assert set(saved["optimizer_states"][0]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    _, resumed = _trained(
        compose_train, root_script, tmp_path / "resumed", "trainable=true", f"ckpt_path={last}"
    )
    assert resumed["trainer"].global_step == whole["trainer"].global_step
    _assert_same_weights(resumed, whole)
