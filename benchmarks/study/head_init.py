#!/usr/bin/env python
"""Does an untrained head keep the information of its input? Pairwise cosines of untrained
trainable-head embeddings against those of the parameter-free pooling of the same inputs.

    python benchmarks/study/head_init.py --preset smollm2-135m-study --per-task 8 \
        --out runs/head_init/smollm2-135m-study.json --markdown runs/head_init/table.md

Texts: the first ``--per-task`` texts of each task file under benchmarks/data/tasks. The
backbone runs once per attention mode (causal for m2/m3, bidirectional for m4/m5); every head
(variant x size x init x seed) then pools the same cached layer states. Reference pooling:
the EOS state of the last layer for m2/m3, the masked mean of the last layer for m4/m5.

Per head: the mean and spread (std) of the off-diagonal cosines, the Spearman correlation of
its pairwise cosines with the reference pooling's, the common share (the fraction of the
un-normalised outputs' energy in their mean over texts; near 1: every text gets one vector),
the InfoNCE loss of step 0 on WordNet training pairs at the study's temperature and the norm
of its gradient over the head's parameters, and leave-one-out 5-NN label accuracy on two
classification tasks (does the head keep what separates the labels?).
Also the per-layer scale of the summaries m3/m5 pool (RMS per entry), beside the per-layer
embedding that the reference adds at RMS 1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from toolchain.atomic import write_text_atomic  # noqa: E402
from toolchain.cpu import recorded_flags  # noqa: E402
from toolchain.data.training import format_query  # noqa: E402
from toolchain.modeling import VARIANTS, HeadConfig, build_embedding_model  # noqa: E402
from toolchain.modeling.pooling import build_pooler, gather_last_token, masked_mean  # noqa: E402

TASKS_DIR = ROOT / "benchmarks" / "data" / "tasks"
TEXT_FILES = ("test.jsonl", "queries.jsonl", "documents.jsonl", "corpus.jsonl")
# Named initialisations: HeadConfig fields. "reference" is the reference code's N(0, 1) latents
# and per-layer embedding (the toolchain's default); the two after it isolate each change;
# "default" (the recorded tables' name) is both changes, the init this record proposes.
SIGNAL_INIT = {"latent_init_std": 0.02, "layer_embedding_init_std": 0.0}
INITS: dict[str, dict] = {
    "reference": {"latent_init_std": 1.0, "layer_embedding_init_std": 1.0},
    "small-latents": {"latent_init_std": 0.02, "layer_embedding_init_std": 1.0},
    "zero-layer-emb": {"latent_init_std": 1.0, "layer_embedding_init_std": 0.0},
    "default": SIGNAL_INIT,
    # data-dependent: the per-layer vector set to minus each layer's mean summary over other
    # texts of the suite (m3/m5 only; measured, not the toolchain's init)
    "centred-layers": SIGNAL_INIT,
    "gated": {**SIGNAL_INIT, "pass_through_gate": True},
}
KNN_TASKS = ("BBCNewsClassification", "SpamAssassinClassification")
PAIRS_FILE = ROOT / "benchmarks" / "data" / "train" / "wordnet_train.jsonl"
TEMPERATURE = 0.05  # the study preset's
# which variant's backbone serves each attention mode (one that asks for every layer)
FEATURE_VARIANT = {"causal": "m3", "bidirectional": "m5"}
REFERENCE_POOLING = {"eos": gather_last_token, "all": masked_mean, "mean": masked_mean}


TEXT_FIELDS = ("text", "sentences")


def load_texts(per_task: int, skip: int = 0) -> list[str]:
    """``per_task`` texts (after the first ``skip``) of each task's first file of texts."""
    texts = []
    for task in sorted(p for p in TASKS_DIR.iterdir() if p.is_dir()):
        for name in TEXT_FILES:
            path = task / name
            rows = [json.loads(line) for line in
                    path.read_text().splitlines()[skip:skip + per_task]] if path.is_file() else []
            found = [r[f] for r in rows for f in TEXT_FIELDS if isinstance(r.get(f), str)]
            if found:
                texts += found
                break
    return texts


@torch.no_grad()
def backbone_features(model, texts: list[str], batch_size: int = 40) -> dict:
    """Every layer's states of ``texts``: {"token_embeddings", "attention_mask",
    "all_layer_embeddings"}, run in batches and padded to one length."""
    parts = []
    for start in range(0, len(texts), batch_size):
        batch = model.tokenizer(texts[start:start + batch_size])
        parts.append(model.features(batch["input_ids"], batch["attention_mask"]))
    length = max(p["attention_mask"].shape[1] for p in parts)

    def pad(x: torch.Tensor) -> torch.Tensor:  # left padding: the mask says where rows start
        return F.pad(x, (0, 0, length - x.shape[1], 0) if x.ndim == 3 else (length - x.shape[1], 0))

    layers = len(parts[0]["all_layer_embeddings"])
    return {"token_embeddings": torch.cat([pad(p["token_embeddings"]) for p in parts]),
            "attention_mask": torch.cat([pad(p["attention_mask"]) for p in parts]),
            "all_layer_embeddings": tuple(torch.cat([pad(p["all_layer_embeddings"][i])
                                                     for p in parts]) for i in range(layers))}


def pairwise(embeddings: torch.Tensor) -> torch.Tensor:
    """Off-diagonal cosines (upper triangle) of (N, H) embeddings."""
    unit = F.normalize(embeddings.float(), dim=-1)
    sims = unit @ unit.T
    rows, cols = torch.triu_indices(len(unit), len(unit), offset=1)
    return sims[rows, cols]


def spread(outputs: torch.Tensor, reference: torch.Tensor) -> dict:
    """Cosine statistics of ``outputs`` and how its similarity order follows ``reference``'s."""
    cos, ref = pairwise(outputs), pairwise(reference)
    common = outputs.float().mean(dim=0).pow(2).sum() / outputs.float().pow(2).sum(-1).mean()
    return {"cos_mean": float(cos.mean()), "cos_std": float(cos.std()),
            "spearman_vs_reference": float(spearmanr(cos.numpy(), ref.numpy()).statistic),
            "common_share": float(common)}


def knn_accuracy(embeddings: torch.Tensor, labels: list[str], k: int = 5) -> float:
    """Leave-one-out k-nearest-neighbour (cosine, majority vote) label accuracy."""
    unit = F.normalize(embeddings.float(), dim=-1)
    sims = (unit @ unit.T).fill_diagonal_(-2.0)
    hits = 0
    for i, neighbours in enumerate(sims.topk(k, dim=1).indices.tolist()):
        votes = [labels[j] for j in neighbours]
        hits += max(set(votes), key=votes.count) == labels[i]
    return hits / len(labels)


def infonce(queries: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE (candidates: every positive) on cosine / temperature."""
    logits = F.normalize(queries.float(), dim=-1) @ F.normalize(positives.float(), dim=-1).T
    return F.cross_entropy(logits / temperature, torch.arange(len(queries)))


def infonce_at_init(queries: torch.Tensor, positives: torch.Tensor, temperature: float) -> dict:
    """The training loss of step 0 on in-batch pairs, and chance = ln(pairs)."""
    return {"loss0": float(infonce(queries, positives, temperature)),
            "chance": math.log(len(queries))}


def head_grad_norm(head, feats: dict) -> float:
    """Norm of the step-0 loss gradient over the head's parameters (the backbone frozen)."""
    with torch.enable_grad():
        head.zero_grad()
        loss = infonce(head(feats["queries"])["sentence_embedding"],
                       head(feats["positives"])["sentence_embedding"], TEMPERATURE)
        loss.backward()
    grads = [p.grad.pow(2).sum() for p in head.parameters() if p.grad is not None]
    return float(torch.stack(grads).sum().sqrt())


def layer_scales(features: dict, summary: str) -> list[float]:
    """RMS per entry of each layer's summary (EOS state or masked mean), mean over texts."""
    reduce = REFERENCE_POOLING[summary]
    return [float(reduce(h, features["attention_mask"]).pow(2).mean(-1).sqrt().mean())
            for h in features["all_layer_embeddings"][1:]]


@dataclass
class Inputs:
    """The texts one measurement pools: a spread set, a calibration set (centred-layers only),
    labelled rows per task (kNN) and query/positive pairs (step-0 loss)."""

    spread: list[str]
    calibration: list[str]
    labelled: dict[str, tuple[list[str], list[str]]]
    queries: list[str]
    positives: list[str]


def load_inputs(per_task: int, knn_rows: int, pairs: int) -> Inputs:
    labelled = {}
    for task in KNN_TASKS:
        rows = [json.loads(line) for line in
                (TASKS_DIR / task / "test.jsonl").read_text().splitlines()[:knn_rows]]
        labelled[task] = ([r["text"] for r in rows], [r["label"] for r in rows])
    rows = [json.loads(line) for line in PAIRS_FILE.read_text().splitlines()[:pairs]]
    return Inputs(load_texts(per_task), load_texts(per_task, skip=per_task), labelled,
                  [format_query(r["query"], r.get("instruction")) for r in rows],
                  [r["positive"] for r in rows])


def figures(out: dict, reference: torch.Tensor, labelled: dict) -> dict:
    """Spread, step-0 loss and kNN accuracy of one pooling's outputs on every text set."""
    row = {**spread(out["spread"], reference),
           **infonce_at_init(out["queries"], out["positives"], TEMPERATURE)}
    row.update({f"knn {t}": knn_accuracy(out[t], labels) for t, (_, labels) in labelled.items()})
    return row


def head_row(config: HeadConfig, seed: int, init: str, feats: dict, calibration: dict,
             labelled: dict) -> dict:
    """Every figure of one untrained head on the cached features."""
    torch.manual_seed(seed)
    head = build_pooler(config).eval()
    if init == "centred-layers":  # the per-layer vector starts at minus each layer's mean
        head.layer_embedding.weight.copy_(-head.layer_summaries(calibration).mean(dim=0))
    out = {k: head(f)["sentence_embedding"] for k, f in feats.items()}
    summary = config.token_input if "last_layer" in config.pooling else config.layer_summary
    reduce = REFERENCE_POOLING[summary]
    reference = reduce(feats["spread"]["token_embeddings"], feats["spread"]["attention_mask"])
    return {"reference": summary, **figures(out, reference, labelled),
            "grad_norm0": head_grad_norm(head, feats)}


@torch.no_grad()
def measure(preset: str, variants: list[str], sizes: list[str], inits: list[str],
            seeds: list[int], inputs: Inputs) -> dict:
    """One row per (variant, size, init, seed) plus one per parameter-free pooling."""
    rows, scales = [], {}
    for attention in ("causal", "bidirectional"):
        mine = [v for v in variants if VARIANTS[v].attention == attention]
        if not mine:
            continue
        model = build_embedding_model(preset, FEATURE_VARIANT[attention]).eval()
        shape = model.head_config
        sets = {"spread": inputs.spread, "queries": inputs.queries,
                "positives": inputs.positives, **{t: x for t, (x, _) in inputs.labelled.items()}}
        feats = {k: backbone_features(model, texts) for k, texts in sets.items()}
        calibration = backbone_features(model, inputs.calibration)
        del model
        for name in mine:
            variant = VARIANTS[name]
            for size, init, seed in itertools.product(sizes, inits, seeds):
                if init == "centred-layers" and variant.pooling != "multi_layer_trainable":
                    continue
                config = HeadConfig.from_size(
                    size, pooling=variant.pooling, attention=attention,
                    hidden_size=shape.hidden_size, num_layers=shape.num_layers, **INITS[init])
                rows.append({"variant": name, "size": size, "init": init, "seed": seed,
                             **head_row(config, seed, init, feats, calibration,
                                       inputs.labelled)})
            if variant.pooling == "multi_layer_trainable":
                scales[name] = layer_scales(feats["spread"], config.layer_summary)
        for summary in sorted({r["reference"] for r in rows if r["variant"] in mine}):
            reduce = REFERENCE_POOLING[summary]
            out = {k: reduce(f["token_embeddings"], f["attention_mask"]) for k, f in feats.items()}
            rows.append({"variant": f"{summary} pooling ({attention})", "size": "-",
                         "init": "-", "seed": "-", "reference": summary,
                         **figures(out, out["spread"], inputs.labelled)})
    return {"rows": rows, "layer_rms": scales}


def markdown(result: dict) -> str:
    """The rows averaged over seeds (range of the step-0 loss beside it), then layer scales."""
    groups: dict[tuple, list[dict]] = {}
    for row in result["rows"]:
        groups.setdefault((row["variant"], row["size"], row["init"]), []).append(row)
    knn = [k for k in result["rows"][0] if k.startswith("knn ")]
    keys = ["cos_mean", "cos_std", "spearman_vs_reference", "common_share", "loss0"] + knn
    lines = ["| head | size | init | seeds | cos mean | cos std | Spearman vs pooling | common "
             "share | step-0 loss (chance) | head grad norm | "
             + " | ".join("kNN " + k[4:].replace("Classification", "") for k in knn) + " |",
             "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(knn)]
    for (variant, size, init), group in groups.items():
        mean = {k: sum(r[k] for r in group) / len(group) for k in keys}
        losses = [r["loss0"] for r in group]
        norms = [r["grad_norm0"] for r in group if "grad_norm0" in r]
        grad = f"{sum(norms) / len(norms):.3f}" if norms else "-"
        loss = f"{mean['loss0']:.3f}" + (f" ({min(losses):.3f}-{max(losses):.3f})"
                                          if len(group) > 1 else "")
        lines.append(f"| {variant} | {size} | {init} | {len(group)} | {mean['cos_mean']:.3f} | "
                     f"{mean['cos_std']:.3f} | {mean['spearman_vs_reference']:.3f} | "
                     f"{mean['common_share']:.3f} | {loss} ({group[0]['chance']:.3f}) | "
                     f"{grad} | " + " | ".join(f"{mean[k]:.3f}" for k in knn) + " |")
    for name, rms in result["layer_rms"].items():
        lines += ["", f"{name}: RMS per entry of the per-layer summaries, layers 1..{len(rms)} "
                  f"(reference per-layer embedding: RMS 1): min {min(rms):.3g}, median "
                  f"{sorted(rms)[len(rms) // 2]:.3g}, max {max(rms):.3g}; layers below 1: "
                  f"{sum(r < 1 for r in rms)} of {len(rms)}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="smollm2-135m-study")
    p.add_argument("--variants", default="m2 m3 m4 m5")
    p.add_argument("--sizes", default="compact paper")
    p.add_argument("--inits", default=" ".join(INITS), help=f"of: {', '.join(INITS)}")
    p.add_argument("--seeds", default="0 1 2")
    p.add_argument("--per-task", type=int, default=8, help="spread texts from each task file")
    p.add_argument("--knn-rows", type=int, default=120, help=f"labelled rows of {KNN_TASKS}")
    p.add_argument("--pairs", type=int, default=32, help="WordNet pairs for the step-0 loss")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True, help="JSON of every row")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    unknown = set(args.inits.split()) - set(INITS) | set(args.variants.split()) - set(VARIANTS)
    if unknown:
        p.error(f"unknown init(s) or variant(s): {', '.join(sorted(unknown))}")
    torch.set_num_threads(args.threads)
    inputs = load_inputs(args.per_task, args.knn_rows, args.pairs)
    start = time.perf_counter()
    result = measure(args.preset, args.variants.split(), args.sizes.split(), args.inits.split(),
                     [int(s) for s in args.seeds.split()], inputs)
    result.update({"preset": args.preset, "spread_texts": len(inputs.spread),
                   "argv": sys.argv[1:], "seconds": time.perf_counter() - start,
                   "cpu_flags": recorded_flags(), "torch": torch.__version__})
    write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    if args.markdown:
        write_text_atomic(args.markdown, table)
    print(table + f"\n{len(inputs.spread)} spread texts, {result['seconds']:.0f} s; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
