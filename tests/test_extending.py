"""docs/extending.md's worked examples, applied as written to a copy of the repository.

Each example may touch the schema (protos/), one new file and one registration line; the
copy is compiled and a pipeline using the new feature type, sampler and training metric is
validated, trained, exported and served through the commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import synthetic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "extending.md"
APPLY = re.compile(r'<!-- apply (?P<example>\w+): (?:new (?P<new>\S+)|insert into (?P<into>\S+) '
                   r'(?P<where>before|after) "(?P<anchor>[^"]+)") -->\n```\w*\n(?P<code>.*?)```', re.S)


def doc_edits() -> list[dict]:
    return [m.groupdict() for m in APPLY.finditer(DOC.read_text())]


def apply(edit: dict, root: Path) -> None:
    if edit["new"]:
        path = root / edit["new"]
        assert not path.exists(), f"{edit['new']} already exists"
        path.write_text(edit["code"])
        return
    path = root / edit["into"]
    lines = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if edit["anchor"] in line]
    assert len(hits) == 1, f"anchor {edit['anchor']!r} found {len(hits)} times in {edit['into']}"
    at = hits[0] + (1 if edit["where"] == "after" else 0)
    path.write_text("".join(lines[:at]) + edit["code"] + "".join(lines[at:]))


def test_each_example_touches_the_schema_one_new_file_and_one_registration_line():
    edits = doc_edits()
    assert {e["example"] for e in edits} == {"feature", "sampler", "metric"}
    for example in ("feature", "sampler", "metric"):
        own = [e for e in edits if e["example"] == example]
        new = [e for e in own if e["new"]]
        code = [e for e in own if e["into"] and not e["into"].startswith("protos/")]
        assert len(new) == 1 and new[0]["new"].startswith("recframe/"), own
        assert len(code) == 1 and code[0]["into"].endswith("__init__.py"), own
        assert len(code[0]["code"].strip().splitlines()) == 1, code[0]["code"]


@pytest.mark.slow
def test_the_worked_examples_train_export_and_serve(tmp_path):
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*_pb2.py", "*_pb2.pyi", "*.egg-info")
    for part in ("recframe", "protos"):
        shutil.copytree(REPO / part, repo / part, ignore=ignore)
    for part in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / part, repo / part)
    for edit in doc_edits():
        apply(edit, repo)
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "build")],
                           cwd=repo, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr

    config_path, paths = synthetic.write_config(tmp_path, num_epochs=1, log_step_count_steps=10)
    text = Path(config_path).read_text()
    text = text.replace('raw_feature { feature_name: "age" boundaries: [25, 35, 50] embedding_dim: 4 }',
                        'log_bucket_feature { feature_name: "age" num_buckets: 8 embedding_dim: 4 }')
    assert "log_bucket_feature" in text
    text = text.replace("  shuffle_buffer_size: 512\n", "  shuffle_buffer_size: 512\n  popular_pool_sampler { input_path: "
                        f'"{paths["items"]}" num_sample: 32 top_k: 40 }}\n')
    text = text.replace("metrics { in_batch_recall_at_k { top_k: 5 } }", "metrics { in_batch_mrr {} }")
    Path(config_path).write_text(text)

    env = {**os.environ, "PYTHONPATH": str(repo), "RECFRAME_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return done

    assert "OK" in cli("recframe.validate", "--pipeline_config", config_path).stdout
    # The new rules and ranges are the validator's too.
    bad = tmp_path / "bad.config"
    bad.write_text(text.replace("top_k: 40", "top_k: 0").replace("num_buckets: 8 embedding_dim: 4", "num_buckets: 0"))
    done = subprocess.run([sys.executable, "-m", "recframe.validate", "--pipeline_config", str(bad)], cwd=tmp_path,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2
    for expected in ("data_config.popular_pool_sampler.top_k: got 0, expected >= 1",
                     "log_bucket_feature.num_buckets: got 0, expected >= 1",
                     "log_bucket_feature.embedding_dim: not set, expected > 0"):
        assert expected in done.stderr, done.stderr

    cli("recframe.train", "--pipeline_config", config_path)
    records = [json.loads(line) for line in (tmp_path / "model" / "log.jsonl").read_text().splitlines()]
    mrr = [r["in_batch_mrr"] for r in records if r["type"] == "train"]
    assert mrr and all(0.0 < v <= 1.0 for v in mrr)
    result = json.loads((tmp_path / "model" / "eval_result.json").read_text())
    assert result["test"]["hit_rate@10"] > 0.2  # random ranking: 10 / 200 = 0.05

    cli("recframe.export", "--pipeline_config", str(tmp_path / "model" / "pipeline.config"),
        "--export_dir", str(tmp_path / "export"), "--no_compile")
    meta = json.loads((tmp_path / "export" / "user" / "tower.json").read_text())
    age = next(f for f in meta["features"] if f["feature_name"] == "age")
    assert age["transform"] == {"type": "LogBucketFeature", "mapping": "log2", "num_buckets": 8}
    cli("recframe.predict", "--export_dir", str(tmp_path / "export" / "user"), "--input", paths["test"],
        "--output", str(tmp_path / "users.parquet"), "--id_column", "user_id", "--no_progress")
    assert pq.read_table(tmp_path / "users.parquet").num_rows == synthetic.NUM_USERS
