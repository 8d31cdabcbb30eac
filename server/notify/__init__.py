"""Notifications: an outbox of events fanned out to per-site channels (issue 15).

A cause (a case opened, a device gone quiet, an import finished) writes its
:class:`~server.notify.models.NotifyEvent` and one
:class:`~server.notify.models.NotifyDelivery` per interested channel in its
own transaction (:func:`server.notify.service.emit`); the worker's sender
(:mod:`server.notify.sender`) delivers them with retries and records every
attempt, so a rolled-back cause sends nothing and a crash loses nothing.
"""
