"""Manager web UI (server-rendered): login, queue, cases, dashboard, devices, audit.

:func:`server.web.install.install_web` mounts it on the app under ``/web``.
"""
