"""One thread helper for training, evaluation and serving, and serve.py's `threads` reaching
the model's forward passes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from fakenews_pl import threads

REPO = Path(__file__).resolve().parents[1]


def test_intra_op_sets_the_count_for_the_block_and_restores_it() -> None:
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with threads.intra_op(other) as found:
        assert found == before and torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with threads.intra_op(None) as found:
        assert torch.get_num_threads() == before == found
    with pytest.raises(RuntimeError), threads.intra_op(other):
        raise RuntimeError
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("count", [1, 2])
def test_serve_py_threads_run_the_model_on_that_many_threads(
    count: int, exported_bundle: Path, root_script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve.py threads=N: every forward pass of the served model runs on N intra-op threads
    (it used to be reset to 1 around each one), whatever the process's count is."""
    import httpx

    from fakenews_pl.serving import server

    serve = root_script("serve")
    apps = []
    monkeypatch.setattr(server, "serve", lambda app, *args, **kwargs: apps.append(app))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("serve", overrides=[f"ckpt_path={exported_bundle}", f"threads={count}"])
    torch.set_num_threads(3)
    try:
        serve.serve(cfg)
        (app,) = apps
        seen = []
        net = app.state.predictor.net
        # The batch path calls the head as a module; the lean path (a few texts) its function.
        net.head.register_forward_pre_hook(
            lambda *_: seen.append(("batch", torch.get_num_threads()))
        )
        eval_logits = net.head.eval_logits
        monkeypatch.setattr(net.head, "eval_logits", lambda x: (
            seen.append(("lean", torch.get_num_threads())), eval_logits(x))[1])  # fmt: skip
        transport = httpx.ASGITransport(app=app)

        async def post(texts: list[str]) -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                return await c.post("/predict", json={"texts": texts})

        import asyncio

        for texts in (["a headline", "another"], [f"headline {i}" for i in range(12)]):
            response = asyncio.run(post(texts))
            assert response.status_code == 200, response.text
        assert seen == [("lean", count), ("batch", count)]
    finally:
        torch.set_num_threads(2)


def test_workers_on_a_gpu_are_refused_before_the_model_loads(
    exported_bundle: Path, root_script, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakenews_pl.errors import ConfigError

    serve = root_script("serve")
    loaded = []
    monkeypatch.setattr(serve, "load_predictor", lambda *args, **kwargs: loaded.append(args))
    # This machine has no GPU: past the device check, as on one that has.
    monkeypatch.setattr(serve.config, "check_checkpoint_and_device", lambda *args: None)
    overrides = [f"ckpt_path={exported_bundle}", "workers=2", "device=cuda"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("serve", overrides=overrides)
    before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    with pytest.raises(ConfigError, match=r"^workers=2 with device=cuda: the workers are forks"):
        serve.serve(cfg)
    assert loaded == []
    # serve.py's metrics directory for its workers is gone, and so is the variable naming it
    # (processes started later would inherit a directory that no longer exists).
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") == before
