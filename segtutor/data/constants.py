"""Sizes of the TGS Salt Identification data, defined once for the whole package.

Kept in a module of their own, with no imports, so that the lowest layers (the synthetic set, the
transforms, the Kaggle layout reader) and the workflow in :mod:`segtutor.tgs` can all import them
without importing each other.
"""

#: Height and width of every image and mask of the competition (and of the synthetic copy).
TGS_SIZE = 101

#: The size the networks see: 101 padded (or resized) to 128, a multiple of 32, so that five
#: halvings of the encoder divide it exactly.
MODEL_SIZE = 128
