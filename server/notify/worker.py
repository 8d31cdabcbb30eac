"""The notification sender's thread in ``lintel-server worker``."""

from __future__ import annotations

import argparse
import logging
import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from server.notify.sender import SenderConfig, run_step

log = logging.getLogger(__name__)

CAUSE_CHECK_S = 30.0
"""Seconds between looks for offline devices and waiting cases (each scans every
device and open case; deliveries are still polled every ``poll_s``)."""


def sender_config(args: argparse.Namespace) -> SenderConfig:
    """The worker's :class:`SenderConfig` from its options (validated, bounded).

    Here, not in ``server.notify.cli`` (which declares the options): the worker runs
    below the command line and must not import it (docs/architecture.md).
    """
    return SenderConfig(
        lease_s=args.notify_lease_s,
        base_delay_s=args.notify_base_delay_s,
        offline_after_min=args.notify_offline_min,
        unassigned_after_h=args.notify_unassigned_h,
    )


def sender_loop(
    factory: sessionmaker[Session], stop: threading.Event, *, config: SenderConfig, poll_s: float
) -> None:
    """Run :func:`run_step` until ``stop``; sleeps ``poll_s`` when nothing was sent."""
    next_check = 0.0
    while not stop.is_set():
        check = time.monotonic() >= next_check
        if check:
            next_check = time.monotonic() + CAUSE_CHECK_S
        try:
            stats = run_step(factory, config=config, check_causes=check)
        except Exception:  # keep sending; the failed pass's transactions rolled back
            log.exception("notification pass failed; retrying in %.1f s", poll_s)
            stop.wait(poll_s)
            continue
        if stats.sent or stats.failed_attempts:
            log.info(
                "notifications: %d sent, %d failed attempts", stats.sent, stats.failed_attempts
            )
        if not stats.sent:
            stop.wait(poll_s)


def start_sender(
    factory: sessionmaker[Session],
    stop: threading.Event,
    *,
    args: argparse.Namespace,
    poll_s: float,
) -> threading.Thread:
    """Start the sender thread (its counters are served with the worker's ``--metrics-port``)."""
    thread = threading.Thread(
        target=sender_loop,
        args=(factory, stop),
        kwargs={"config": sender_config(args), "poll_s": poll_s},
        name="notify-sender",
        daemon=True,
    )
    thread.start()
    return thread


def send_once(factory: sessionmaker[Session], *, args: argparse.Namespace) -> None:
    """One notification pass (``worker --once``): what is due now is sent or scheduled again."""
    stats = run_step(factory, config=sender_config(args))
    if stats.sent or stats.failed_attempts:
        log.warning("notifications: %d sent, %d failed attempts", stats.sent, stats.failed_attempts)
