"""The image files of a data folder, for the plugin's datasets."""
import os

from basicsr.data.data_util import paths_from_folder

from ..errors import DataError


def image_paths(folder: str) -> list[str]:
    """Paths of the files in `folder` (BasicSR's `paths_from_folder`: every file, not recursive), sorted; DataError
    naming the folder if it is missing or not a folder (the option that names it: dataroot_gt or gt_folders)."""
    if not os.path.isdir(folder):
        raise DataError(f'{folder}: no such folder of images (dataroot_gt / gt_folders)')
    return sorted(paths_from_folder(folder))
