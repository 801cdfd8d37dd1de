"""Deployable artifacts: the model-directory layout consumers load (sentence-transformers, TEI,
Triton, plain onnxruntime), the shipped consumer code, prompts and runtime requirements."""
