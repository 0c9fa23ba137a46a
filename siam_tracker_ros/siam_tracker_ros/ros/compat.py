"""Differences between the rclpy releases this package runs on (Humble, Iron, Jazzy, Kilted)."""
from __future__ import annotations

import signal
import threading
from typing import Any, List, Optional


def subscription_passes_message_info() -> bool:
    """
    Return True where rclpy hands MessageInfo to two-argument subscription callbacks.

    Iron (rclpy 4) and later inspect the callback's signature and pass
    ``(msg, message_info)`` to a callback that takes two arguments; Humble (rclpy 3.3) calls
    every subscription callback with the message only. The releases that pass it define
    ``Subscription.CallbackType``.
    """
    from rclpy.subscription import Subscription

    return hasattr(Subscription, 'CallbackType')


def publication_sequence_number(info: Any) -> Optional[int]:
    """Return the publisher's sequence number in a MessageInfo, where the middleware has it."""
    if isinstance(info, dict):
        seq = info.get('publication_sequence_number')
    else:
        seq = getattr(info, 'publication_sequence_number', None)
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def init_without_signal_handlers(args: Optional[List[str]] = None) -> None:
    """
    Initialise rclpy, leaving SIGINT and SIGTERM to the caller.

    The caller installs its own handlers and stops its threads before shutting rclpy down:
    rclpy's own handler would invalidate the context while a worker may still publish
    ("publisher's context is invalid"). SignalHandlerOptions exists from rclpy 3.1 (Humble).
    """
    import rclpy
    from rclpy import signals

    options = getattr(signals, 'SignalHandlerOptions', None)
    if options is None:
        rclpy.init(args=args)
    else:
        rclpy.init(args=args, signal_handler_options=options.NO)


def init_stopping_on_signals(args: Optional[List[str]] = None) -> threading.Event:
    """
    Initialise rclpy without its signal handlers; return an Event that SIGINT/SIGTERM set.

    The caller's loop watches the event, stops its threads, then shuts rclpy down.
    """
    init_without_signal_handlers(args)
    stop = threading.Event()

    def request_stop(signum, frame) -> None:
        stop.set()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    return stop


def ignore_stop_signals() -> None:
    """
    Ignore SIGINT and SIGTERM from now on: call it first in a process's cleanup.

    Ctrl-C in a terminal reaches a node twice under ros2 launch (from the terminal and
    forwarded by launch): a second signal must not interrupt the cleanup.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
