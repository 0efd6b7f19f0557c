"""TF-Hub text-embedding SavedModel -> verified `HubEmbedding` artifact.

The module's text handling is read from its graph, not assumed: the ops between the input and
the split (`StaticRegexReplace`/`RegexReplace`, `StringLower`), the split itself
(`StringSplitV2` or v1 `StringSplit`), the token an empty row is filled with
(`SparseFillEmptyRows`), the OOV hash buckets (`StringToHashBucketFast`), the vocabulary
(`InitializeTableFromTextFileV2` over an asset, or `LookupTableImportV2` constants) and the
combiner (`SparseSegmentSqrtN` / `Mean` / `Sum`). The table comes from the checkpoint.

The table keeps its dtype (float32, or float64 as the v2 example exporter writes it) unless
float32 is asked for. Every conversion is verified: probe sentences go through TensorFlow and
through the converted torch module, and the artifact is only moved into place when they agree
within a tolerance: an absolute one when the table keeps its dtype (the outputs are then
bit-equal), a relative one when a float64 table is stored as float32.
This is the only module (with `hub_module`) that imports TensorFlow, and only when called.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import socket
import sys
import tempfile
import urllib.error
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fakenews_pl.hub import artifact
from fakenews_pl.hub.tokenizer import TextRecipe

HUB_MODULES = {
    "gnews20": "https://tfhub.dev/google/tf2-preview/gnews-swivel-20dim/1",
    "nnlm50": "https://tfhub.dev/google/tf2-preview/nnlm-en-dim50/1",
    "nnlm128": "https://tfhub.dev/google/tf2-preview/nnlm-en-dim128/1",
    "wiki250": "https://tfhub.dev/google/Wiki-words-250/2",
}
DEFAULT_TOLERANCE = 1e-5  # largest |TF - ours| when the table keeps its dtype
# Largest |TF - ours| / max |TF| of a vector when a float64 table is stored as float32 (the
# float32 rounding of the table and of the sums; see `Parity`, measured in the README).
DEFAULT_RELATIVE_TOLERANCE = 1e-4
DTYPE_CHOICES = ("keep", "float32")  # `convert(dtype=...)`, `--dtype`
TABLE_DTYPES = ("float32", "float64")  # table dtypes the converter reads

_PASS_THROUGH = {"Identity", "Reshape", "Squeeze", "ExpandDims", "StopGradient"}
_SPLITS = {"StringSplit", "StringSplitV2"}
_COMBINERS = {
    "SparseSegmentSqrtN": "sqrtn",
    "SparseSegmentSqrtNWithNumSegments": "sqrtn",
    "SparseSegmentMean": "mean",
    "SparseSegmentMeanWithNumSegments": "mean",
    "SparseSegmentSum": "sum",
    "SparseSegmentSumWithNumSegments": "sum",
}
_UNSUPPORTED_HASHES = {"StringToHashBucketStrong", "StringToHashBucket"}


class ConversionError(RuntimeError):
    """The module cannot be converted faithfully; nothing was written."""


class ParityError(ConversionError):
    """The converted module disagrees with TensorFlow on the probe sentences."""


@dataclass(frozen=True)
class ModuleSpec:
    """What a module's graph says it does with text."""

    recipe: TextRecipe
    oov_buckets: int
    combiner: str
    vocab: tuple[str, ...]


# --------------------------------------------------------------------------- graph reading


class _Graph:
    """One GraphDef or FunctionDef body: nodes by name and the names of its inputs."""

    def __init__(self, name: str, nodes: Sequence[Any], args: set[str]) -> None:
        self.name = name
        self.nodes = {n.name: n for n in nodes}
        self.args = args

    def producer(self, ref: str) -> Any | None:
        """The node behind an input reference (`name`, `name:1`, `name:out:0`), None for args."""
        name = ref.lstrip("^").split(":")[0]
        return None if name in self.args else self.nodes.get(name)

    def const(self, ref: str) -> Any:
        import tensorflow as tf

        node = self.producer(ref)
        if node is None or node.op != "Const":
            raise ConversionError(
                f"expected a constant for {ref!r} in {self.name}, "
                f"found {'an input' if node is None else node.op}"
            )
        return tf.make_ndarray(node.attr["value"].tensor)

    def upstream(self, ref: str) -> Iterator[Any]:
        """Nodes feeding `ref` (data inputs only), breadth first."""
        seen, queue = set(), [ref]
        while queue:
            node = self.producer(queue.pop(0))
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            yield node
            queue.extend(i for i in node.input if not i.startswith("^"))


def _load_graphs(saved_model_dir: Path) -> tuple[list[_Graph], Any]:
    from tensorflow.core.protobuf import saved_model_pb2

    pb = saved_model_dir / "saved_model.pb"
    if not pb.is_file():
        raise ConversionError(f"{saved_model_dir} is not a SavedModel: saved_model.pb is missing")
    model = saved_model_pb2.SavedModel()
    model.ParseFromString(pb.read_bytes())
    meta_graph = model.meta_graphs[0]
    graphs = [_Graph("the top-level graph", meta_graph.graph_def.node, set())]
    for fn in meta_graph.graph_def.library.function:
        args = {a.name for a in fn.signature.input_arg}
        graphs.append(_Graph(f"function {fn.signature.name}", fn.node_def, args))
    return graphs, meta_graph


def _op_summary(graphs: list[_Graph]) -> str:
    ops = sorted({n.op for g in graphs for n in g.nodes.values()})
    interesting = [
        op
        for op in ops
        if any(k in op for k in ("String", "Regex", "Lookup", "Table", "Segment", "Hash", "Sparse"))
    ]
    return ", ".join(interesting or ops)


def _attr(node: Any, name: str, default: Any) -> Any:
    """An op attribute; SavedModels strip attributes left at their default, so supply it."""
    if name not in node.attr:
        return default
    value = node.attr[name]
    return getattr(value, value.WhichOneof("value"))


def _decode(value: Any) -> str:
    value = value.item() if hasattr(value, "item") else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _recipe_from_split(graph: _Graph, split: Any, fill: str | None) -> TextRecipe:
    sep = _decode(graph.const(split.input[1]))
    if split.op == "StringSplitV2":
        kind = "sep" if sep else "whitespace"
        maxsplit, skip_empty = int(_attr(split, "maxsplit", -1)), False
    else:
        if not sep:
            raise ConversionError(f"{split.op} with an empty delimiter (byte split) is unsupported")
        kind, maxsplit, skip_empty = "any_of", -1, bool(_attr(split, "skip_empty", True))
    steps: list[dict[str, Any]] = []
    node = graph.producer(split.input[0])
    while node is not None and node.op != "Placeholder":
        if node.op == "StaticRegexReplace":
            steps.append(
                _regex_step(
                    _decode(_attr(node, "pattern", b"")),
                    _decode(_attr(node, "rewrite", b"")),
                    _attr(node, "replace_global", True),
                )
            )
        elif node.op == "RegexReplace":
            steps.append(
                _regex_step(
                    _decode(graph.const(node.input[1])),
                    _decode(graph.const(node.input[2])),
                    _attr(node, "replace_global", True),
                )
            )
        elif node.op == "StringLower":
            encoding = _decode(_attr(node, "encoding", b"")).lower()
            steps.append({"op": "lower", "encoding": "utf-8" if encoding else "ascii"})
        elif node.op not in _PASS_THROUGH:
            raise ConversionError(
                f"cannot interpret op {node.op} ({node.name}) on the text path before "
                f"{split.op} in {graph.name}; supported: StaticRegexReplace, RegexReplace, "
                f"StringLower, {', '.join(sorted(_PASS_THROUGH))}"
            )
        node = graph.producer(node.input[0])
    steps.reverse()
    return TextRecipe(
        steps=tuple(steps),
        split=kind,
        sep=sep or " ",
        skip_empty=skip_empty,
        maxsplit=maxsplit if maxsplit > 0 else -1,
        empty_row_token=fill,
    )


def _regex_step(pattern: str, rewrite: str, replace_global: bool) -> dict[str, Any]:
    return {
        "op": "regex_replace",
        "pattern": pattern,
        "rewrite": rewrite,
        "replace_global": bool(replace_global),
    }


def _fill_token(graphs: list[_Graph]) -> str | None:
    """The string an empty row becomes (`SparseFillEmptyRows` default traced to a string
    constant, directly or through a table lookup); None when rows stay empty (zeros)."""
    fills = set()
    for graph in graphs:
        for node in graph.nodes.values():
            if node.op != "SparseFillEmptyRows":
                continue
            for up in graph.upstream(node.input[3]):
                if up.op == "Const" and _attr(up, "dtype", 0) == 7:  # DT_STRING
                    fills.add(_decode(graph.const(up.name)))
    if len(fills) > 1:
        raise ConversionError(f"several empty-row fill tokens found: {sorted(fills)}")
    return fills.pop() if fills else None


def _single(values: set, what: str, graphs: list[_Graph]) -> Any:
    if len(values) != 1:
        found = "none" if not values else ", ".join(map(str, sorted(values)))
        raise ConversionError(
            f"expected exactly one {what} in the module, found {found}; "
            f"ops in the graph: {_op_summary(graphs)}"
        )
    return values.pop()


def read_module_spec(saved_model_dir: str | os.PathLike) -> ModuleSpec:
    """Read the recipe, OOV buckets, combiner and vocabulary from a SavedModel's graph."""
    saved_model_dir = Path(saved_model_dir)
    graphs, meta_graph = _load_graphs(saved_model_dir)
    nodes = [(g, n) for g in graphs for n in g.nodes.values()]
    bad_hash = {n.op for _, n in nodes if n.op in _UNSUPPORTED_HASHES}
    if bad_hash:
        raise ConversionError(
            f"unsupported OOV hash ops {sorted(bad_hash)} (only "
            "StringToHashBucketFast, i.e. farmhash Fingerprint64)"
        )
    fill = _fill_token(graphs)
    splits = [(g, n) for g, n in nodes if n.op in _SPLITS]
    recipes = {
        json.dumps(_recipe_from_split(g, n, fill).to_dict(), sort_keys=True) for g, n in splits
    }
    recipe = TextRecipe.from_dict(
        json.loads(_single(recipes, "text recipe (StringSplit/StringSplitV2 op)", graphs))
    )
    buckets = {
        int(_attr(n, "num_buckets", 0)) for _, n in nodes if n.op == "StringToHashBucketFast"
    }
    oov_buckets = _single(buckets, "OOV bucket count", graphs) if buckets else 0
    combiner = _single(
        {_COMBINERS[n.op] for _, n in nodes if n.op in _COMBINERS},
        "combiner (SparseSegmentSqrtN/Mean/Sum)",
        graphs,
    )
    vocab = _read_vocab(saved_model_dir, meta_graph, nodes, graphs)
    return ModuleSpec(recipe, oov_buckets, combiner, tuple(vocab))


def _read_vocab(saved_model_dir: Path, meta_graph: Any, nodes: list, graphs: list) -> list[str]:
    text_inits = [
        n
        for _, n in nodes
        if n.op in ("InitializeTableFromTextFileV2", "InitializeTableFromTextFile")
    ]
    if text_inits:
        init = text_inits[0]
        key, value = _attr(init, "key_index", None), _attr(init, "value_index", None)
        offset = _attr(init, "offset", 0)
        if (key, value) != (-2, -1) or offset:
            raise ConversionError(
                f"{init.op} with key_index={key}, value_index={value}, offset="
                f"{offset} is unsupported (expected whole line -> line number)"
            )
        # TF2 SavedModels list their assets in asset_file_def; TF1 ones in a collection.
        assets = saved_model_dir / "assets"
        names = sorted(
            {a.filename for a in meta_graph.asset_file_def}
            | ({p.name for p in assets.iterdir() if p.is_file()} if assets.is_dir() else set())
        )
        if len(names) != 1:
            names = [n for n in names if n == "tokens.txt"] or names
        if len(names) != 1:
            raise ConversionError(f"cannot tell the vocabulary asset among {names}")
        limit = _attr(init, "vocab_size", -1)
        return _read_vocab_file(saved_model_dir / "assets" / names[0], limit)
    imports = [(g, n) for g, n in nodes if n.op == "LookupTableImportV2"]
    if imports:
        graph, node = imports[0]
        keys = [_decode(k) for k in graph.const(node.input[1]).reshape(-1)]
        values = graph.const(node.input[2]).reshape(-1)
        if not np.array_equal(values, np.arange(len(keys))):
            raise ConversionError("LookupTableImportV2 values are not 0..n-1; unsupported table")
        return keys
    raise ConversionError(f"no vocabulary table initializer found; ops: {_op_summary(graphs)}")


def _read_vocab_file(path: Path, limit: int) -> list[str]:
    """Lines as TF's text-file table initializer reads them (one token per line; like its
    line reader, a line's one trailing "\r" is not part of the token: CRLF files read alike)."""
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if limit > 0:
        lines = lines[:limit]
    try:
        return [line.decode("utf-8") for line in lines]
    except UnicodeDecodeError as e:
        raise ConversionError(f"{path}: vocabulary is not UTF-8 ({e})") from None


def read_table(saved_model_dir: str | os.PathLike, rows: int) -> tuple[np.ndarray, str]:
    """The (rows, dim) embedding table from the module's checkpoint, in its own dtype (float32
    or float64; another is refused), and its name."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(Path(saved_model_dir) / "variables" / "variables"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    matrices = {k: s for k, s in shapes.items() if len(s) == 2 and dtypes[k].is_floating}
    found = [k for k, s in matrices.items() if s[0] == rows and "OPTIMIZER_SLOT" not in k]
    if len(found) != 1:
        raise ConversionError(
            f"expected one float variable with {rows} rows (vocabulary + OOV buckets) in "
            f"{saved_model_dir}/variables, found {found or 'none'}; 2-D variables: {matrices}"
        )
    dtype = dtypes[found[0]].name
    if dtype not in TABLE_DTYPES:
        raise ConversionError(
            f"the table {found[0]} in {saved_model_dir}/variables is {dtype}; the converter "
            f"reads {' and '.join(TABLE_DTYPES)} tables"
        )
    return reader.get_tensor(found[0]), found[0]


# --------------------------------------------------------------------------- sources

# Seconds a TF-Hub download may go without receiving anything before it is given up (a network
# that drops packets would otherwise hang for minutes per connection attempt).
DOWNLOAD_TIMEOUT_S = 60
_LOCAL_HINT = (
    "a local SavedModel directory works too: download the module where there is network "
    "(the .tar.gz from tfhub.dev or Kaggle), extract it and pass its directory as SOURCE"
)


def _import_hub() -> Any:
    with warnings.catch_warnings():  # tensorflow_hub 0.16 still imports pkg_resources
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import tensorflow_hub as hub
    return hub


def quiet_tensorflow() -> None:
    """Import TensorFlow and tensorflow_hub without their start-up log lines (command lines).

    TensorFlow 2.16+ writes its C++ start-up lines (oneDNN, CUDA drivers, CPU features) before
    absl logging is initialised, where TF_CPP_MIN_LOG_LEVEL does not reach them; they are
    captured at the file-descriptor level during the import and shown only if it fails.
    """
    # Later C++ lines too, errors included ("failed call to cuInit" on a machine without a GPU):
    # a failure that matters reaches Python as an exception, reported in one line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow_hub" not in sys.modules:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                _import_hub()
            except BaseException:
                os.dup2(saved, 2)
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))
                raise
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
    import absl.logging
    import tensorflow as tf

    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")


def parse_source(source: str) -> tuple[Path | None, str]:
    """SOURCE -> (local SavedModel dir, its absolute path) or (None, TF-Hub handle or URL).

    Needs neither TensorFlow nor network; anything else raises ConversionError (one line).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConversionError(
                f"SOURCE {source}: not a SavedModel directory, saved_model.pb is missing "
                "(expected an extracted module, e.g. the .tar.gz from tfhub.dev or Kaggle)"
            )
        return path, str(path.absolute())
    handle = HUB_MODULES.get(source, source)
    if handle.startswith(("http://", "https://", "gs://")):
        return None, handle
    if path.exists():
        why = " (a file; extract a .tar.gz and pass the directory)"
    elif os.sep in source or source.startswith((".", "~")):
        why = " (no such directory)"
    else:
        why = ""
    raise ConversionError(
        f"SOURCE {source!r} is neither a SavedModel directory{why}, a short name "
        f"({', '.join(HUB_MODULES)}) nor a TF-Hub handle or URL"
    )


def _download_failure(handle: str, e: Exception) -> str:
    if isinstance(e, urllib.error.HTTPError):
        why = f"TF-Hub answered HTTP {e.code} ({e.reason}), check the handle"
    elif isinstance(e, (urllib.error.URLError, ConnectionError, TimeoutError, socket.gaierror)):
        why = f"no network, or TF-Hub is unreachable ({getattr(e, 'reason', e)})"
    else:
        why = f"{type(e).__name__}: {e}"
    return " ".join(f"could not download {handle}: {why}; {_LOCAL_HINT}".split())


def resolve_source(source: str) -> tuple[Path, str]:
    """A local SavedModel directory, a short name or a TF-Hub handle/URL -> (local dir, source).

    Handles are resolved (downloaded and cached) by `tensorflow_hub`, which needs network;
    without it this fails in one line that names the handle and the local alternative.
    """
    local, name = parse_source(source)
    if local is not None:
        return local, name
    hub = _import_hub()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(previous or DOWNLOAD_TIMEOUT_S)  # urllib's default is none
    try:
        return Path(hub.resolve(name)), name
    except Exception as e:  # noqa: BLE001 - tensorflow_hub raises many kinds; report one way
        raise ConversionError(_download_failure(name, e)) from e
    finally:
        socket.setdefaulttimeout(previous)


# --------------------------------------------------------------------------- verification


def default_probes(vocab: Sequence[str], seed: int = 0) -> list[str]:
    """Edge-case sentences plus sentences made of the module's own tokens."""
    rng = random.Random(seed)
    sample = rng.sample(list(vocab), min(len(vocab), 200))
    words = " ".join(sample[:40])
    return [
        "",
        " ",
        "   ",
        "a  b",
        "  leading and trailing  ",
        "tab\tseparated\twords",
        "new\nline\r\nand\x0bvertical\x0cfeed",
        "non\u00a0breaking\u2003spaces",
        "Hello, World! It's 3:45 p.m. -- (really) [sic] {x} «quoted» ¿qué? ¡sí!",
        "...",
        "!!!",
        "'",
        '"',
        "-",
        "e-mail",
        "U.S.A.",
        "don't",
        "C++ & C#",
        "#hashtag @user",
        "CamelCase UPPER lower MiXeD",
        "İstanbul ΣΟΦΙΑ ǅemal straße ﬁne",
        "naïve café résumé coöperate",
        "Москва 北京 東京 서울 القاهرة עברית हिन्दी",
        "emoji 😀 👍🏽 👨‍👩‍👧 🇫🇷",
        "zero\u200bwidth joiner\u200d",
        "combining e\u0301",
        "xqzvbnm qwertyuiopasdfg zzzzzzzzzz",
        "1234567890 3.14 1e10",
        words,
        words.upper(),
        words.title(),
        " ".join(sample),
        ", ".join(sample[:20]),
        "  ".join(sample[40:60]),
        " ".join(rng.choice(sample) for _ in range(5000)),
        " ".join([sample[0]] * 3000),
    ]


def tf_embed_fn(saved_model_dir: str | os.PathLike):
    """A callable texts -> (N, D) numpy from TensorFlow itself (`hub.load`)."""
    import tensorflow as tf
    import tensorflow_hub as hub

    module = hub.load(str(saved_model_dir))
    if callable(module):
        call = module
    else:
        signature = module.signatures["default"]

        def call(x):
            return signature(x)["default"]

    def embed(texts: Sequence[str]) -> np.ndarray:
        return call(tf.constant(list(texts), dtype=tf.string)).numpy()

    return embed


def tf_outputs(
    saved_model_dir: str | os.PathLike, probes: Sequence[str], batch: int = 64
) -> np.ndarray:
    """(len(probes), D) float64 outputs of TensorFlow itself; the module is freed on return,
    so its copy of the table is gone before the converter reads its own."""
    tf_embed = tf_embed_fn(saved_model_dir)
    chunks = [tf_embed(probes[i : i + batch]) for i in range(0, len(probes), batch)]
    del tf_embed
    gc.collect()
    return np.concatenate(chunks).astype(np.float64)


@dataclass(frozen=True)
class Parity:
    """How far the converted module's outputs are from TensorFlow's over the probes.

    `max_abs_diff`: the largest |TF - ours| of any component of any probe's vector.
    `max_rel_diff`: the largest, over the probes, of max |TF - ours| / max |TF| of that
    probe's vector (a zero vector counts 0 if ours is zero too, else inf): relative to the
    vector's size, not to each component, since a component that sums to nearly 0 from large
    rows carries the rounding of the rows, not of itself.
    """

    max_abs_diff: float
    max_rel_diff: float
    worst_abs_probe: str
    worst_rel_probe: str


def measure_parity(
    expected: np.ndarray, artifact_dir: str | os.PathLike, probes: Sequence[str], batch: int = 64
) -> Parity:
    """Compare TF's (N, D) `expected` outputs with the converted module's on the N probes."""
    from fakenews_pl.hub.embedding import HubEmbedding

    ours = HubEmbedding.load(artifact_dir)
    actual = np.concatenate(
        [ours.embed_texts(probes[i : i + batch]).numpy() for i in range(0, len(probes), batch)]
    ).astype(np.float64)
    if expected.shape != actual.shape:
        raise ParityError(f"TensorFlow returned {expected.shape}, ours {actual.shape}")
    diff = np.abs(expected - actual).max(axis=1)  # (N,)
    diff[~np.isfinite(diff)] = np.inf
    scale = np.abs(expected).max(axis=1)  # (N,)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / scale)
    rel[~np.isfinite(rel)] = np.inf
    return Parity(
        float(diff.max()),
        float(rel.max()),
        probes[int(diff.argmax())],
        probes[int(rel.argmax())],
    )


# --------------------------------------------------------------------------- conversion


@contextlib.contextmanager
def _step(progress: Any, description: str) -> Iterator[None]:
    task = progress.add_task(description, total=None)
    yield
    progress.update(task, total=1, completed=1)


def convert(
    source: str,
    out_dir: str | os.PathLike,
    probes: Sequence[str] = (),
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
    show_progress: bool = True,
    *,
    dtype: str = "keep",
    relative_tolerance: float = DEFAULT_RELATIVE_TOLERANCE,
) -> dict[str, Any]:
    """Convert `source` into `out_dir` and verify it against TensorFlow; returns meta.json.

    `probes` are added to `default_probes`. `dtype`: "keep" stores the table in the module's
    dtype (float32 or float64), "float32" stores it as float32. Raises ConversionError
    (ParityError when the outputs differ from TensorFlow's by more than `tolerance`, or, for
    a float64 table stored as float32, by more than `relative_tolerance` relative to each
    vector's size: `Parity.max_rel_diff`); then `out_dir` is left untouched.
    """
    import torch
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if dtype not in DTYPE_CHOICES:
        raise ConversionError(f"dtype must be one of {list(DTYPE_CHOICES)}, got {dtype!r}")

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=False) as progress:
        with _step(progress, f"Resolving {source}"):
            module_dir, source_name = resolve_source(source)
        with _step(progress, "Reading the graph and vocabulary"):
            spec = read_module_spec(module_dir)
        all_probes = default_probes(spec.vocab) + list(probes)
        with _step(progress, f"Embedding {len(all_probes)} probes with TensorFlow"):
            expected = tf_outputs(module_dir, all_probes)
        rows = len(spec.vocab) + spec.oov_buckets
        with _step(progress, f"Reading the {rows:,}-row table"):
            table, variable = read_table(module_dir, rows)
        source_dtype = str(table.dtype)
        if dtype == "float32":
            table = table.astype(np.float32, copy=False)
        downcast = str(table.dtype) != source_dtype
        with artifact.atomic_directory(out_dir, overwrite=overwrite) as tmp:
            with _step(progress, "Writing table and vocabulary"):
                meta = {
                    "source": source_name,
                    "variable": variable,
                    "source_dtype": source_dtype,
                    "oov_buckets": spec.oov_buckets,
                    "combiner": spec.combiner,
                    "recipe": spec.recipe.to_dict(),
                }
                artifact.write_artifact(tmp, torch.from_numpy(table), list(spec.vocab), meta)
                del table
            with _step(progress, "Comparing the converted module with TensorFlow"):
                parity = measure_parity(expected, tmp, all_probes)
            if downcast:
                checked, limit = "max_rel_diff", relative_tolerance
                worst, worst_probe = parity.max_rel_diff, parity.worst_rel_probe
                if not worst <= limit:
                    raise ParityError(
                        f"converted float32 embedding differs from TensorFlow's {source_dtype} "
                        f"output by a relative {worst:.3g} (max |TF - ours| / max |TF| of a "
                        f"vector; > relative tolerance {limit:g}) on probe "
                        f"{worst_probe[:200]!r}; nothing was written (--dtype keep converts "
                        f"it exactly)"
                    )
            else:
                checked, limit = "max_abs_diff", tolerance
                worst, worst_probe = parity.max_abs_diff, parity.worst_abs_probe
                if not worst <= limit:
                    raise ParityError(
                        f"converted embedding differs from TensorFlow by {worst:.3g} (> "
                        f"tolerance {limit:g}) on probe {worst_probe[:200]!r}; nothing was "
                        f"written"
                    )
            # `checked` names the figure `tolerance` bounds; both are recorded (see `Parity`).
            meta["parity"] = {
                "checked": checked,
                "tolerance": limit,
                "max_abs_diff": parity.max_abs_diff,
                "max_rel_diff": parity.max_rel_diff,
                "reference": f"TensorFlow's outputs ({source_dtype} table)",
                "probes": len(all_probes),
            }
            artifact.update_meta(tmp, {"parity": meta["parity"]})
    return artifact.read_meta(out_dir)
