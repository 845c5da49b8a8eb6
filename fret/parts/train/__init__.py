"""The contrastive trainer: data loading and batching, the Gecko loss, gradient caching, the loop.

Entry points: `fret.parts.train.loop.train` (library) and `fret.parts.train.cli.main` (`fret train`).
"""
