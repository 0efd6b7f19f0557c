"""The classifier as a traceable graph, for `torch.export` and ONNX (run by onnxruntime).

`pooling.pool_bags` builds its `BagPlan` (TF's split of each bag into sub-bags) with numpy, which
no tracer can follow. Here the plan is made outside the graph (`graph_inputs`) and passed in:

    ids (T,) int64, sub_offsets (S,) int64, bag_offsets (B,) int64, head_scale (B, 1),
    final_div (B, 1)  ->  `PlannedClassifier`  ->  (B,) probability of class 1

The graph is `pool_with_plan`'s own two `embedding_bag` sums and scaling, then the head: its
pooled vectors equal `HubEmbedding`'s bit for bit, in torch.export and in onnxruntime (whose
embedding-bag loop adds a bag's rows left to right from 0, as TF does; tested). The dense layers
are onnxruntime's matrix products, not MKL's: probabilities agree to a float32 rounding or two
(tests/test_onnx_export.py states the figure).

    python scripts/export_model.py CKPT exported/ --onnx       # exported/model.onnx
    OnnxClassifier.load("exported/").predict_proba(texts)     # onnxruntime, our tokenizer
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fakenews_pl.hub.pooling import make_plan
from fakenews_pl.hub.tokenizer import HubTokenizer
from fakenews_pl.nn.net import FakeNewsNet
from fakenews_pl.serving import bundle

ONNX_FILE = "model.onnx"
INPUT_NAMES = ("ids", "sub_offsets", "bag_offsets", "head_scale", "final_div")
OPSET = 18


class PlannedClassifier(nn.Module):
    """A bag `FakeNewsNet`'s table and head, whose forward takes the pooling plan as inputs
    (the head alone is held: the table is this module's own copy)."""

    def __init__(self, net: FakeNewsNet) -> None:
        super().__init__()
        if net.encoder is not None:
            raise ValueError("a traceable graph exists for the bag model only")
        self.weight = nn.Parameter(net.embedding.weight.detach().clone(), requires_grad=False)
        self.head = net.head

    def forward(
        self,
        ids: Tensor,
        sub_offsets: Tensor,
        bag_offsets: Tensor,
        head_scale: Tensor,
        final_div: Tensor,
    ) -> Tensor:
        """(T,) ids and the plan -> (B,) probability of class 1."""
        # (S, D): each head and 8-block summed left to right from 0, as TF sums them.
        sub_sums = F.embedding_bag(ids, self.weight, sub_offsets, mode="sum")
        # (B, D): each bag's sub-bag sums added left to right from 0, then TF's scaling.
        sub_ids = torch.arange(sub_sums.shape[0], device=ids.device)
        pooled = F.embedding_bag(sub_ids, sub_sums, bag_offsets, mode="sum")
        pooled = pooled * head_scale / final_div
        return torch.sigmoid(self.head(pooled.float()))


def graph_inputs(
    tokenizer: HubTokenizer, combiner: str, texts: Sequence[str]
) -> tuple[Tensor, ...]:
    """Texts -> `PlannedClassifier`'s inputs (`INPUT_NAMES`), the plan made with numpy here."""
    ids, offsets = (torch.from_numpy(a) for a in tokenizer.encode(list(texts)))
    plan = make_plan(offsets, ids.numel(), combiner, torch.float32)
    bags = len(offsets)
    # The plan's shortcuts made explicit: one sub-bag per bag, and "sum"'s unit scales.
    bag_offsets = plan.bag_offsets if plan.bag_offsets is not None else torch.arange(bags)
    ones = torch.ones(bags, 1)
    head_scale = plan.head_scale if plan.head_scale is not None else ones
    final_div = plan.final_div if plan.final_div is not None else ones
    return ids, plan.sub_offsets, bag_offsets, head_scale, final_div


def export_program(
    model: PlannedClassifier, example: tuple[Tensor, ...]
) -> torch.export.ExportedProgram:
    """`torch.export` of the model, dynamic in the token, sub-bag and bag counts."""
    tokens, subs, bags = (torch.export.Dim(name) for name in ("tokens", "sub_bags", "bags"))
    shapes = ({0: tokens}, {0: subs}, {0: bags}, {0: bags}, {0: bags})
    return torch.export.export(model, example, dynamic_shapes=shapes)


def write_onnx(net: FakeNewsNet, path: str | os.PathLike) -> None:
    """Write the bag network `net` as an ONNX model (opset `OPSET`) to `path`."""
    model = PlannedClassifier(net.eval()).eval()
    embedding = net.embedding
    # A few texts long enough to have 8-blocks, so every input has its general shape.
    example = graph_inputs(embedding.tokenizer, embedding.combiner, ["a b c " * 7, "a", ""])
    with torch.no_grad():
        program = export_program(model, example)
        onnx_program = torch.onnx.export(
            program, example, input_names=list(INPUT_NAMES), output_names=["probability"],
            opset_version=OPSET, dynamo=True, verbose=False,
        )  # fmt: skip
    onnx_program.save(str(path))


class OnnxClassifier:
    """An exported bundle's model.onnx run by onnxruntime, with the bundle's tokenizer."""

    def __init__(self, session, tokenizer: HubTokenizer, combiner: str, class_names: list[str]):
        self.session, self.tokenizer, self.combiner = session, tokenizer, combiner
        self.class_names = class_names

    @classmethod
    def load(cls, directory: str | os.PathLike) -> OnnxClassifier:
        """The bundle in `directory` (verified), which must hold model.onnx (`--onnx`)."""
        import onnxruntime

        from fakenews_pl.hub import artifact

        info = bundle.read_info(directory)
        if ONNX_FILE not in info["sha256"]:
            raise bundle.BundleError(
                f"{directory} has no {ONNX_FILE}: export it with scripts/export_model.py --onnx"
            )
        bundle.verify(directory, info)
        embedding_dir = Path(directory) / bundle.EMBEDDING_DIR
        meta = artifact.verified_meta(embedding_dir)
        tokenizer = artifact.read_tokenizer(embedding_dir, meta)
        session = onnxruntime.InferenceSession(
            str(Path(directory) / ONNX_FILE), providers=["CPUExecutionProvider"]
        )
        return cls(session, tokenizer, meta["combiner"], info["class_names"])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 2) float32 probabilities, columns in `class_names` order."""
        if not texts:
            return np.zeros((0, 2), dtype=np.float32)
        inputs = graph_inputs(self.tokenizer, self.combiner, texts)
        feeds = {name: tensor.numpy() for name, tensor in zip(INPUT_NAMES, inputs, strict=True)}
        (p,) = self.session.run(None, feeds)
        return np.stack([1 - p, p], axis=1)
