"""Segmentation: a spread in, one crop per chromosome (a separated sister pair kept whole) out."""
