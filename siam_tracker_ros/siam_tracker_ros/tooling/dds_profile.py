"""
The DDS profile for large images (config/fastdds_large_images.xml) and the environment for it.

A profile is named ``large_images`` (the shipped Fast DDS XML), ``none`` (Fast DDS defaults)
or given as the path of an XML file. Fast DDS reads the file named by
``FASTRTPS_DEFAULT_PROFILES_FILE`` (Fast DDS 2.x: Humble to Jazzy) or
``FASTDDS_DEFAULT_PROFILES_FILE`` (3.x: Kilted) when a process creates its first participant,
so both are set for every process of a graph before it starts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

PACKAGE = 'siam_tracker_ros'
LARGE_IMAGES = 'large_images'
NONE = 'none'
PROFILE_FILES = {LARGE_IMAGES: 'fastdds_large_images.xml'}
ENV_VARS = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')


class ProfileError(ValueError):
    """A DDS profile name or file that cannot be used."""


def _config_dirs():
    try:  # installed: share/siam_tracker_ros/config
        from ament_index_python.packages import (get_package_share_directory,
                                                 PackageNotFoundError)
        try:
            yield Path(get_package_share_directory(PACKAGE)) / 'config'
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    yield Path(__file__).resolve().parents[2] / 'config'  # source tree / editable install


def profile_path(profile: str) -> Optional[Path]:
    """Return the XML file of ``profile`` (None for ``none``); raise ProfileError if absent."""
    if profile == NONE:
        return None
    if profile in PROFILE_FILES:
        for folder in _config_dirs():
            path = folder / PROFILE_FILES[profile]
            if path.is_file():
                return path
        raise ProfileError(f'the {profile} DDS profile ({PROFILE_FILES[profile]}) is not '
                           f'installed: rebuild {PACKAGE} (colcon build) or give the path of '
                           'an XML file')
    path = Path(profile).expanduser()
    if path.suffix.lower() != '.xml' or not path.is_file():
        raise ProfileError(f'DDS profile {profile!r} is neither {LARGE_IMAGES}, {NONE} nor an '
                           'existing .xml file')
    return path.resolve()


def apply_profile(env: Dict[str, str], profile: str) -> Dict[str, str]:
    """
    Set (or, for ``none``, remove) the Fast DDS profile variables in ``env``; return ``env``.

    ``none`` removes them, so the processes run with Fast DDS's built-in transports even
    where the calling shell names a profile file of its own.
    """
    path = profile_path(profile)
    for name in ENV_VARS:
        if path is None:
            env.pop(name, None)
        else:
            env[name] = str(path)
    return env


def profile_in_use(env: Optional[Dict[str, str]] = None) -> Optional[str]:
    """Return the profile file that ``env`` (default os.environ) gives Fast DDS, if any."""
    env = os.environ if env is None else env
    for name in ENV_VARS:
        if env.get(name):
            return env[name]
    return None
