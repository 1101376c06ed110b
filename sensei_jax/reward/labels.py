"""Preference labels of an image pair, in Motif's convention: which frame is more interesting, or neither.

Every label array on disk (`preference/preferences_<name>.npy`, int8 [N]) and every annotator speaks these values.
"""

from __future__ import annotations

import enum


class Label(enum.IntEnum):
    FIRST = 0  # the first image of the pair is preferred
    SECOND = 1
    TIE = 2  # both equally (a soft 0.5 target in the Bradley-Terry loss)
    UNKNOWN = 3  # no usable answer; dropped from training


# Names in value order, for counts and plots: ("first", "second", "tie", "unknown").
LABEL_NAMES: tuple[str, ...] = tuple(label.name.lower() for label in Label)
