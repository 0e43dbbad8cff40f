"""Label tables of Cityscapes (cityscapesScripts ``labels.py``) and IDD (AutoNUE ``anue_labels.py``).

These are facts about the datasets, needed to decode their label-id PNGs and to rasterise
their polygon files; they are not shipped inside the datasets themselves.
"""
from __future__ import annotations

from typing import NamedTuple


class CityscapesLabel(NamedTuple):
    name: str
    id: int
    train_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(CityscapesLabel(*row) for row in [
    ("unlabeled", 0, 255, False, True, (0, 0, 0)),
    ("ego vehicle", 1, 255, False, True, (0, 0, 0)),
    ("rectification border", 2, 255, False, True, (0, 0, 0)),
    ("out of roi", 3, 255, False, True, (0, 0, 0)),
    ("static", 4, 255, False, True, (0, 0, 0)),
    ("dynamic", 5, 255, False, True, (111, 74, 0)),
    ("ground", 6, 255, False, True, (81, 0, 81)),
    ("road", 7, 0, False, False, (128, 64, 128)),
    ("sidewalk", 8, 1, False, False, (244, 35, 232)),
    ("parking", 9, 255, False, True, (250, 170, 160)),
    ("rail track", 10, 255, False, True, (230, 150, 140)),
    ("building", 11, 2, False, False, (70, 70, 70)),
    ("wall", 12, 3, False, False, (102, 102, 156)),
    ("fence", 13, 4, False, False, (190, 153, 153)),
    ("guard rail", 14, 255, False, True, (180, 165, 180)),
    ("bridge", 15, 255, False, True, (150, 100, 100)),
    ("tunnel", 16, 255, False, True, (150, 120, 90)),
    ("pole", 17, 5, False, False, (153, 153, 153)),
    ("polegroup", 18, 255, False, True, (153, 153, 153)),
    ("traffic light", 19, 6, False, False, (250, 170, 30)),
    ("traffic sign", 20, 7, False, False, (220, 220, 0)),
    ("vegetation", 21, 8, False, False, (107, 142, 35)),
    ("terrain", 22, 9, False, False, (152, 251, 152)),
    ("sky", 23, 10, False, False, (70, 130, 180)),
    ("person", 24, 11, True, False, (220, 20, 60)),
    ("rider", 25, 12, True, False, (255, 0, 0)),
    ("car", 26, 13, True, False, (0, 0, 142)),
    ("truck", 27, 14, True, False, (0, 0, 70)),
    ("bus", 28, 15, True, False, (0, 60, 100)),
    ("caravan", 29, 255, True, True, (0, 0, 90)),
    ("trailer", 30, 255, True, True, (0, 0, 110)),
    ("train", 31, 16, True, False, (0, 80, 100)),
    ("motorcycle", 32, 17, True, False, (0, 0, 230)),
    ("bicycle", 33, 18, True, False, (119, 11, 32)),
    ("license plate", -1, -1, False, True, (0, 0, 142)),
])


class IddLabel(NamedTuple):
    name: str
    id: int
    level3_id: int
    level3_supercategory: str
    has_instances: bool
    color: tuple[int, int, int]


# name, id, level3Id, level-2 name (the panoptic JSON's supercategory), hasInstances, colour
IDD_LABELS: tuple[IddLabel, ...] = tuple(IddLabel(*row) for row in [
    ("road", 0, 0, "drivable", False, (128, 64, 128)),
    ("parking", 1, 1, "drivable", False, (250, 170, 160)),
    ("drivable fallback", 2, 1, "drivable", False, (81, 0, 81)),
    ("sidewalk", 3, 2, "non-drivable", False, (244, 35, 232)),
    ("rail track", 4, 3, "non-drivable", False, (230, 150, 140)),
    ("non-drivable fallback", 5, 3, "non-drivable", False, (152, 251, 152)),
    ("person", 6, 4, "living-thing", True, (220, 20, 60)),
    ("animal", 7, 4, "living-thing", True, (246, 198, 145)),
    ("rider", 8, 5, "living-thing", True, (255, 0, 0)),
    ("motorcycle", 9, 6, "2-wheeler", True, (0, 0, 230)),
    ("bicycle", 10, 7, "2-wheeler", True, (119, 11, 32)),
    ("autorickshaw", 11, 8, "autorickshaw", True, (255, 204, 54)),
    ("car", 12, 9, "car", True, (0, 0, 142)),
    ("truck", 13, 10, "large-vehicle", True, (0, 0, 70)),
    ("bus", 14, 11, "large-vehicle", True, (0, 60, 100)),
    ("caravan", 15, 12, "large-vehicle", True, (0, 0, 90)),
    ("trailer", 16, 12, "large-vehicle", True, (0, 0, 110)),
    ("train", 17, 12, "large-vehicle", True, (0, 80, 100)),
    ("vehicle fallback", 18, 12, "large-vehicle", True, (136, 143, 153)),
    ("curb", 19, 13, "barrier", False, (220, 190, 40)),
    ("wall", 20, 14, "barrier", False, (102, 102, 156)),
    ("fence", 21, 15, "barrier", False, (190, 153, 153)),
    ("guard rail", 22, 16, "barrier", False, (180, 165, 180)),
    ("billboard", 23, 17, "structures", False, (174, 64, 67)),
    ("traffic sign", 24, 18, "structures", False, (220, 220, 0)),
    ("traffic light", 25, 19, "structures", False, (250, 170, 30)),
    ("pole", 26, 20, "structures", False, (153, 153, 153)),
    ("polegroup", 27, 20, "structures", False, (153, 153, 153)),
    ("obs-str-bar-fallback", 28, 21, "structures", False, (169, 187, 214)),
    ("building", 29, 22, "construction", False, (70, 70, 70)),
    ("bridge", 30, 23, "construction", False, (150, 100, 100)),
    ("tunnel", 31, 23, "construction", False, (150, 120, 90)),
    ("vegetation", 32, 24, "vegetation", False, (107, 142, 35)),
    ("sky", 33, 25, "sky", False, (70, 130, 180)),
    ("fallback background", 34, 25, "sky", False, (169, 187, 214)),
    ("unlabeled", 35, 255, "void", False, (0, 0, 0)),
    ("ego vehicle", 36, 255, "void", False, (0, 0, 0)),
    ("rectification border", 37, 255, "void", False, (0, 0, 0)),
    ("out of roi", 38, 255, "void", False, (0, 0, 0)),
    ("license plate", 39, 255, "void", False, (0, 0, 142)),
])

# The 26 level-3 classes as IDD's panoptic JSONs list them (id, name, isthing, colour): the
# name and colour of the first label of each class, except class 12, named after its fallback.
IDD_LEVEL3_CATEGORIES: tuple[tuple[int, str, bool, tuple[int, int, int]], ...] = tuple(
    (l3, "vehicle fallback" if l3 == 12 else first.name, first.has_instances,
     (136, 143, 153) if l3 == 12 else first.color)
    for l3, first in sorted({l.level3_id: l for l in reversed(IDD_LABELS) if l.level3_id != 255}.items())
)
