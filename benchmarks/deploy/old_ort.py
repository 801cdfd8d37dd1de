"""Run an artifact's graph under older ONNX Runtime releases, each in a throwaway venv.

For every version: a venv with only onnxruntime==VERSION, numpy and tokenizers (pip, PyPI), then
the artifact's own poolattn_onnx.py embeds hard texts there (empty, far over max_length, a
literal EOS, non-Latin with emoji, an instruction query; both padding sides). The vectors are
compared with the Embedder's under this project's onnxruntime. A graph the old runtime cannot
load is reported as such (the fused fp32 graph needs 1.23: ONNX Attention).

    .venv/bin/python benchmarks/deploy/old_ort.py runs/tiny-mistral/m5/onnx-portable \\
        runs/tiny-mistral/m5/onnx-fp32 --versions 1.22.1 1.23.2 --json out.json

Recorded: benchmarks/results/deploy.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from toolchain.data.training import format_query  # noqa: E402
from toolchain.deploy.consumer_check import consumer_texts  # noqa: E402
from toolchain.deploy.prompts import evaluation_instructions  # noqa: E402
from toolchain.embedder import Embedder  # noqa: E402

RUN = """
import json, sys
import numpy as np, onnxruntime
sys.path.insert(0, sys.argv[1])
from poolattn_onnx import OnnxEmbedding
texts, prompt_name = json.loads(sys.argv[2]), sys.argv[3]
out = {"onnxruntime": onnxruntime.__version__}
try:
    for side in ("left", "right"):
        model = OnnxEmbedding(sys.argv[1], padding_side=side, threads=1)
        out[side] = np.concatenate([model.encode(texts[:-1]),
                                    model.encode(texts[-1:], prompt_name=prompt_name)]).tolist()
except Exception as err:
    out["error"] = f"{type(err).__name__}: {str(err)[:300]}"
print(json.dumps(out))
"""


def venv_python(root: Path, version: str) -> Path:
    """A venv at root/ort-VERSION with onnxruntime==VERSION (created on first use)."""
    venv = root / f"ort-{version}"
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"onnxruntime=={version}",
                        "numpy<2.3", "tokenizers==0.23.3"], check=True)
    return python


def run_under(python: Path, artifact: Path, texts: list[str], prompt_name: str) -> dict:
    result = subprocess.run([str(python), "-I", "-c", RUN, str(artifact), json.dumps(texts),
                             prompt_name], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout)


def check(artifact: Path, versions: list[str], venv_root: Path) -> list[dict]:
    special = json.loads((artifact / "special_tokens_map.json").read_text())
    manifest = json.loads((artifact / "manifest.json").read_text())
    texts, prompt_name = consumer_texts(special["eos_token"], manifest["max_length"])
    texts.append("a query in the instruction format")
    instruction = evaluation_instructions()[prompt_name]
    expected = Embedder.open(artifact, provider="cpu", threads=1).encode(
        texts[:-1] + [format_query(texts[-1], instruction)]).astype(np.float64)
    rows = []
    for version in versions:
        got = run_under(venv_python(venv_root, version), artifact, texts, prompt_name)
        row = {"artifact": str(artifact), "profile": manifest["profile"]["name"],
               "opset_imports": manifest.get("runtime", {}).get("opset_imports"),
               "requested": version, "onnxruntime": got.get("onnxruntime"),
               "error": got.get("error")}
        for side in ("left", "right"):
            if side in got:
                vectors = np.array(got[side], dtype=np.float64)
                row[f"min_cosine_{side}"] = float((vectors * expected).sum(1).min())
        rows.append(row)
        print(json.dumps(row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--versions", nargs="+", default=["1.22.1"])
    parser.add_argument("--venv-root", type=Path, default=Path("/tmp/poolattn-old-ort"))
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args()
    rows = [r for artifact in args.artifacts for r in check(artifact, args.versions,
                                                            args.venv_root)]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
