"""
Keep ROS traffic of tools and tests on this machine and away from other runs.

``private_domain()`` picks a ROS_DOMAIN_ID in 1..101 that no other cooperating process holds
(a lock file per id in the temp folder, held while the returned object lives), and
``isolated_env()`` returns an environment with that id and localhost-only discovery
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, or ``ROS_LOCALHOST_ONLY=1`` on Humble), so no
DDS traffic leaves the machine.
"""
from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import tempfile
import time
from typing import Dict, Mapping, Optional, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

DOMAIN_LOW, DOMAIN_HIGH = 1, 101


class DomainLease:
    """A ROS_DOMAIN_ID held through a lock file; release() (or process exit) frees it."""

    def __init__(self, domain_id: int, handle) -> None:
        """Keep the open, locked file ``handle`` of ``domain_id``."""
        self.domain_id = domain_id
        self._handle = handle

    def release(self) -> None:
        """Free the id."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def private_domain(seed: Optional[int] = None) -> DomainLease:
    """Lease a free ROS_DOMAIN_ID in [1, 101], starting the search at ``seed`` (default pid)."""
    span = DOMAIN_HIGH - DOMAIN_LOW + 1
    start = (os.getpid() if seed is None else seed) % span
    lock_dir = Path(tempfile.gettempdir())
    for k in range(span):
        domain = DOMAIN_LOW + (start + k) % span
        handle = open(lock_dir / f'siam_tracker_ros_domain_{domain}.lock', 'a+')
        if fcntl is None:
            return DomainLease(domain, handle)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return DomainLease(domain, handle)
    raise RuntimeError(f'every ROS_DOMAIN_ID in {DOMAIN_LOW}..{DOMAIN_HIGH} is in use by other '
                       'siam_tracker_ros runs')


# Distros whose middleware reads ROS_LOCALHOST_ONLY; ROS_AUTOMATIC_DISCOVERY_RANGE came with
# Iron and replaces it there (Jazzy still honours ROS_LOCALHOST_ONLY, with a deprecation warning).
LOCALHOST_ONLY_DISTROS = ('foxy', 'galactic', 'humble')


def restrict_to_localhost(env: Dict[str, str]) -> Dict[str, str]:
    """
    Set in ``env`` the variable that keeps DDS discovery on this machine; return ``env``.

    ``ROS_LOCALHOST_ONLY=1`` where ``ROS_DISTRO`` is Humble or older, else
    ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (Iron and later; also the pip wheels, which
    set no ROS_DISTRO). The other variable is removed, so the two never disagree.
    """
    if env.get('ROS_DISTRO', '').lower() in LOCALHOST_ONLY_DISTROS:
        env['ROS_LOCALHOST_ONLY'] = '1'
        env.pop('ROS_AUTOMATIC_DISCOVERY_RANGE', None)
    else:
        env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
        env.pop('ROS_LOCALHOST_ONLY', None)
    return env


def isolated_env(domain_id: int, base: Optional[Mapping[str, str]] = None,
                 extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Copy of ``base`` (default os.environ) with a private domain and localhost discovery."""
    env = restrict_to_localhost(dict(os.environ if base is None else base))
    env['ROS_DOMAIN_ID'] = str(domain_id)
    env['PYTHONUNBUFFERED'] = '1'
    if extra:
        env.update(extra)
    return env


def start_process(cmd: Sequence[str], env: Mapping[str, str], log_path=None,
                  cwd=None) -> subprocess.Popen:
    """Start ``cmd`` in its own session (process group), output to ``log_path`` or DEVNULL."""
    out = open(log_path, 'wb') if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log_path:
            out.close()


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> Optional[int]:
    """SIGINT the process group of ``proc``, then SIGKILL it after ``timeout``; return the code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # Children of the group (e.g. nodes started by ros2 launch) must go too.
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return proc.wait()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return proc.wait()
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait()
