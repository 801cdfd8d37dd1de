"""An artifact as a model directory the ecosystem's loaders recognise (Hugging Face /
sentence-transformers layout, TEI's files), beside our manifest, sha256s and verify.

Files written next to model.onnx (every one hashed in manifest.json, so an edited file is
refused like an edited graph):

    tokenizer.json, tokenizer_config.json, special_tokens_map.json   the tokenisation contract
    config.json                        the backbone's HF config (model_type, hidden_size, ...)
                                       plus a ``poolattn`` block (variant, pooling, max_length)
    sentence_bert_config.json          max_seq_length = the contract's max_length
    config_sentence_transformers.json  named query prompts, documents raw, cosine similarity
    modules.json                       one module: poolattn_sentence_transformers.PoolattnOnnxModule
    1_Pooling/config.json              what TEI requires; its ONNX backend takes the graph's
                                       ``sentence_embedding`` output as the finished embedding
    poolattn_onnx.py                   the consumer with no project code (numpy, tokenizers,
                                       onnxruntime); verify runs it as a gate
    poolattn_sentence_transformers.py  the sentence-transformers module over poolattn_onnx
    triton-config/config.pbtxt         Triton's ONNX Runtime backend (model.onnx goes to
                                       <repository>/<name>/1/; clients tokenise with tokenizer.json)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SHIPPED = Path(__file__).with_name("shipped")
CONSUMER_MODULE = "poolattn_onnx.py"
ST_MODULE = "poolattn_sentence_transformers.py"
ST_CLASS = "poolattn_sentence_transformers.PoolattnOnnxModule"
SIMILARITY = "cosine"


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def hf_config(model) -> dict:
    """config.json: the backbone's own config (model_type, architectures, hidden_size,
    num_hidden_layers, max_position_embeddings, ...) and what the graph outputs."""
    config = json.loads(model.backbone.config.to_json_string(use_diff=False))
    config["architectures"] = [type(model.backbone).__name__]
    header = model.variant.fields()
    config["poolattn"] = {**header, "embedding_dim": int(model.head_config.hidden_size),
                          "max_length": int(model.tokenizer.max_length),
                          "padding_side": model.tokenizer.padding_side,
                          "output": "sentence_embedding", "normalized": True}
    return config


def sentence_transformers_config(prompts: dict[str, str]) -> dict:
    """config_sentence_transformers.json: prompts by name (queries; ``document`` is raw)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    versions = {"sentence_transformers": installed("sentence-transformers"),
                "transformers": installed("transformers"), "pytorch": installed("torch")}
    return {"__version__": {k: v for k, v in versions.items() if v},
            "model_type": "SentenceTransformer", "prompts": prompts,
            "default_prompt_name": None, "similarity_fn_name": SIMILARITY}


def pooling_config(embedding_dim: int) -> dict:
    """1_Pooling/config.json for TEI (which requires one); the graph pools by itself."""
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens",
             "weightedmean_tokens", "lasttoken")
    return {"word_embedding_dimension": int(embedding_dim),
            **{f"pooling_mode_{m}": m == "lasttoken" for m in modes}, "include_prompt": True}


TRITON_CONFIG = """# Triton ONNX Runtime backend: <repository>/<name>/config.pbtxt beside 1/model.onnx.
# No tokenizer runs in Triton: clients send the ids and mask of this directory's tokenizer.json.
backend: "onnxruntime"
max_batch_size: {max_batch}
input [
  {{ name: "input_ids", data_type: TYPE_INT64, dims: [ -1 ] }},
  {{ name: "attention_mask", data_type: TYPE_INT64, dims: [ -1 ] }}
]
output [
  {{ name: "sentence_embedding", data_type: TYPE_FP32, dims: [ {dim} ] }}
]
dynamic_batching {{ }}
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""


def write_model_dir_files(directory: Path, model, prompts: dict[str, str]) -> list[str]:
    """Write the layout above (all but model.onnx and manifest.json) into ``directory``.

    Args:
        model: the EmbeddingModel being exported (its contract tokenizer, config, variant).
        prompts: prompt name -> prefix (``toolchain.deploy.prompts.artifact_prompts``).

    Returns:
        The relative paths written.
    """
    directory = Path(directory)
    written = model.tokenizer.save(directory)
    dim = int(model.head_config.hidden_size)
    files = {"config.json": hf_config(model),
             "sentence_bert_config.json": {"max_seq_length": int(model.tokenizer.max_length),
                                           "do_lower_case": False},
             "config_sentence_transformers.json": sentence_transformers_config(prompts),
             "modules.json": [{"idx": 0, "name": "0", "path": "", "type": ST_CLASS}],
             "1_Pooling/config.json": pooling_config(dim)}
    for name, data in files.items():
        _write_json(directory / name, data)
    for name in (CONSUMER_MODULE, ST_MODULE):
        shutil.copyfile(SHIPPED / name, directory / name)
    # a folder name Python cannot import: a consumer that puts the artifact on sys.path (as
    # poolattn_onnx.py's docstring shows) must not shadow a real package such as triton
    (directory / "triton-config").mkdir()
    (directory / "triton-config" / "config.pbtxt").write_text(
        TRITON_CONFIG.format(max_batch=32, dim=dim))
    return written + list(files) + [CONSUMER_MODULE, ST_MODULE, "triton-config/config.pbtxt"]
