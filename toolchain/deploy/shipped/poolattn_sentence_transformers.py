"""sentence-transformers module for this artifact: the ONNX graph behind ``SentenceTransformer``.

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("path/to/artifact", trust_remote_code=True, local_files_only=True)
    model.encode(["what is a cat"], prompt_name="WordNetDefinitionRetrieval")

modules.json names this class; sentence-transformers imports it from the directory (hence
``trust_remote_code``). Tokenising and running the graph is ``poolattn_onnx.OnnxEmbedding``
(numpy, tokenizers, onnxruntime only); this file adds the torch tensors that
sentence-transformers' module protocol passes between modules (sentence-transformers >= 6).
"""

from __future__ import annotations

import torch
from sentence_transformers.base.modules import InputModule

try:  # as sentence-transformers loads it: a package beside poolattn_onnx.py
    from .poolattn_onnx import OnnxEmbedding
except ImportError:  # imported from the directory on sys.path
    from poolattn_onnx import OnnxEmbedding


class PoolattnOnnxModule(InputModule):
    """Tokenises with the directory's tokenizer.json and embeds with its model.onnx."""

    save_in_root = True

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = str(directory)
        self.onnx = OnnxEmbedding(directory)
        self.tokenizer = self.onnx.tokenizer
        self.max_seq_length = int(self.tokenizer.truncation["max_length"])

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None,
             revision=None, local_files_only: bool = False, **kwargs) -> "PoolattnOnnxModule":
        directory = cls.load_dir_path(model_name_or_path, subfolder=subfolder, token=token,
                                      cache_folder=cache_folder, revision=revision,
                                      local_files_only=local_files_only)
        return cls(directory)

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict:
        batch = self.onnx.tokenize(list(inputs), prompt)
        return {name: torch.from_numpy(array) for name, array in batch.items()}

    def forward(self, features: dict, **kwargs) -> dict:
        ids = features["input_ids"].cpu().numpy()
        mask = features["attention_mask"].cpu().numpy()
        embedding = torch.from_numpy(self.onnx.run(ids, mask))
        return {**features, "sentence_embedding": embedding.to(features["input_ids"].device)}

    def get_embedding_dimension(self) -> int:
        return int(self.onnx.session.get_outputs()[0].shape[-1])

    def save(self, output_path: str, *args, **kwargs) -> None:
        raise NotImplementedError("an exported artifact is written by `poolattn export`, "
                                  "not re-saved by sentence-transformers")
