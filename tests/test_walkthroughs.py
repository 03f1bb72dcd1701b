"""The walkthrough pages run as written (issue 16): docs/your_data.md's blocks in order in an empty
folder (a synthetic shop log with its own column names -> prepare -> init -> train -> export ->
predict -> retrieve), the trained model beats a popularity ranking on its test split, and
docs/api.md's notebook runs on the same tables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def blocks(page: str) -> list[tuple[str, str]]:
    """The (language, code) of every ```bash and ```python block of a docs page, in order."""
    return [(lang, code) for lang, code in re.findall(r"```(\w+)\n(.*?)```", (DOCS / page).read_text(), re.S)
            if lang in ("bash", "python")]


def run_block(lang: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECFRAME_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_your_data_then_the_api_notebook(tmp_path):
    outputs = []
    for lang, code in blocks("your_data.md"):
        done = run_block(lang, code, tmp_path)
        assert done.returncode == 0, f"{lang} block failed:\n{code}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    assert any(line.startswith("prepared ") for out in outputs for line in out.splitlines())
    (line,) = [line for out in outputs for line in out.splitlines() if line.startswith("test HR@10: the model")]
    model, popular = map(float, re.findall(r"(\d\.\d+)", line))
    assert model > popular + 0.1, line  # the two towers learned more than popularity
    # Export -> predict -> retrieve left their files: embeddings of every item and test buyer, top 10 each.
    items = pq.read_table(tmp_path / "out" / "shop_items.parquet")
    users = pq.read_table(tmp_path / "out" / "shop_users.parquet")
    assert items.num_rows == pq.read_table(tmp_path / "data" / "shop" / "items.parquet").num_rows
    assert users.column_names == ["buyer", "embedding"] and len(users.column("embedding")[0]) == 64
    top = pq.read_table(tmp_path / "out" / "shop_top10.parquet")
    assert top.num_rows == users.num_rows
    # api.md is one notebook: its cells share their names.
    notebook = "\n".join(code for lang, code in blocks("api.md") if lang == "python")
    done = run_block("python", notebook, tmp_path)
    assert done.returncode == 0, f"api.md failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"test HR@10 0\.\d+", [line for line in lines if line.startswith("test HR@10")][0])
    assert lines[-1] == "1 ['product', 'category', 'price']"
