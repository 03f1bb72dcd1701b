"""Pointwise AUC / accuracy of a trained pointwise DSSM on held-out rows.

recframe's evaluation is full-corpus retrieval only (HitRate/NDCG@K); the trainer's
``auc`` / ``accuracy`` metrics are computed on *training* batches (log.jsonl "train"
records). This script loads a checkpoint (default: the best one, chosen by validation
HR@50 during training), parses the rows of valid.parquet / test.parquet like training rows
(user + item features + the label column of data_config.label_fields), scores each row with
sigmoid(similarity / temperature) = sigmoid(model.pointwise_logits(model(batch))) and
reports torchmetrics BinaryAUROC / BinaryAccuracy (threshold 0.5) against the label.

The MovieLens tables hold ONE held-out row per user in each split (943 rows: the user's
second-to-last interaction in valid, the last in test), labelled rating >= 4.

    python experiments/mlp_variants/evaluate_auc.py --pipeline_config experiments/mlp_variants/X.config \
        --model_dir /tmp/mlp/X_seed1 [--checkpoint best|latest|PATH]

Prints one JSON line and writes MODEL_DIR/pointwise_metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from recframe.features.parse import BatchParser
from recframe.pipeline import Pipeline
from recframe.training.checkpoint import load_checkpoint


def pointwise_metrics(model, pipeline: Pipeline, path: str, label: str) -> dict:
    dc = pipeline.data_config
    parser = BatchParser([*pipeline.user_features, *pipeline.item_features], label_fields=[label],
                         item_id_field=dc.item_id_field or None)
    auc, acc = BinaryAUROC(), BinaryAccuracy(threshold=0.5)
    rows = positives = 0
    model.eval()
    with torch.no_grad():
        for batch in pipeline.eval_loader(path, parser):
            probs = torch.sigmoid(model.pointwise_logits(model(batch)).float())
            target = (batch.labels[label] > 0.5).long().view(-1)
            auc.update(probs, target)
            acc.update(probs, target)
            rows += target.numel()
            positives += int(target.sum())
    return {"rows": rows, "positive_rate": positives / max(rows, 1),
            "auc": float(auc.compute()), "accuracy": float(acc.compute())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline_config", required=True)
    ap.add_argument("--model_dir", default=None, help="overrides the config's model_dir")
    ap.add_argument("--checkpoint", default="best", help='"best", "latest" or a checkpoint file')
    ap.add_argument("--label", default=None,
                    help="label column (default: the config's first data_config.label_fields, else \"label\")")
    ap.add_argument("--splits", nargs="+", default=None,
                    help="parquet files to score (default: the config's eval and test inputs)")
    args = ap.parse_args(argv)
    pipeline = Pipeline.from_file(args.pipeline_config)
    config = pipeline.config
    model_dir = args.model_dir or config.model_dir
    if args.checkpoint in ("best", "latest"):
        ckpt_dir = os.path.join(model_dir, "checkpoints")
        if args.checkpoint == "best":
            ckpt = os.path.join(ckpt_dir, "best.pt")
        else:
            with open(os.path.join(ckpt_dir, "latest.json")) as f:
                ckpt = os.path.join(ckpt_dir, json.load(f)["path"])
    else:
        ckpt = args.checkpoint
    state = load_checkpoint(ckpt, map_location="cpu")
    model = pipeline.build_model()
    model.load_state_dict(state["model"])
    label = args.label or (config.data_config.label_fields[0] if config.data_config.label_fields else "label")
    splits = args.splits or [config.eval_input_path, config.test_input_path]
    result = {"checkpoint": ckpt, "step": state.get("step"), "label": label}
    for path in splits:
        name = os.path.splitext(os.path.basename(path))[0]
        result[name] = pointwise_metrics(model, pipeline, path, label)
    print(json.dumps(result))
    with open(os.path.join(model_dir, "pointwise_metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
