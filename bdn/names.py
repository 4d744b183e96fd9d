"""What image names say: the noisy/clean suffixes of paired sets and PolyU's camera and scene.

Ground floor (no images read): bdn.data pairs files with it, and biqan keeps PolyU scenes on one side of its
validation split with it.
"""

from __future__ import annotations

from pathlib import Path

from bdn.errors import BdnError

NOISY_SUFFIX = "_real"
CLEAN_SUFFIX = "_mean"


def strip_suffix(stem: str, suffix: str) -> str:
    return stem[: -len(suffix)] if stem.endswith(suffix) and len(stem) > len(suffix) else stem


def polyu_group(image_id: str) -> tuple[str, str]:
    """(camera, scene) of a PolyU crop id such as `Canon5D2_5_160_3200_chair_11`.

    Fields: camera, aperture, shutter, ISO, the scene word(s), the crop index. Upstream spellings are kept
    (`reciever`, `GO`); empty fields from doubled underscores (`NikonD800_6-3_125_5000_plant__4`) are dropped.
    A `_real`/`_mean` suffix and a file extension are accepted and ignored.
    """
    stem = Path(image_id).stem if Path(image_id).suffix.lower() in (".jpg", ".png") else image_id
    stem = strip_suffix(strip_suffix(stem, NOISY_SUFFIX), CLEAN_SUFFIX)
    fields = stem.split("_")
    scene = "_".join(field for field in fields[4:-1] if field)
    if len(fields) < 6 or not fields[-1].isdigit() or not fields[3].isdigit() or not scene:
        raise BdnError(f"{image_id!r}: not a PolyU image id (camera_aperture_shutter_iso_scene_index)")
    return fields[0], scene
