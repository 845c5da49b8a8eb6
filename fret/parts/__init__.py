"""The parts the stages are built from: LLM backends and request cache, embedder, FAISS index,
corpus sources, chunking, language id, decontamination, MCLS, converters, trainer, evaluation.

No part imports a stage; each is usable on its own (`fret train` and `fret eval` are parts' commands).
"""
