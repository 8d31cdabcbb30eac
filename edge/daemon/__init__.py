"""``lintel-edge run``: the unattended edge daemon, one module per thread.

Threads, each owning its own state (nothing shared but the outbox, which
locks, and the gallery reference, which is swapped whole):

- one *camera worker* per camera (:mod:`edge.daemon.cameras`): a
  :class:`~edge.pipeline.capture.VideoSource` (its reader thread fills a
  bounded queue and drops, counting, the oldest frame when analysis falls
  behind; it reopens a failed stream with backoff) feeding a
  :class:`~edge.pipeline.stream.Pipeline`; every ended track becomes a
  sighting in the durable outbox. A camera that cannot be opened at all is
  retried with the same backoff, forever: an unattended box never gives up on
  a camera.
- the *forwarder* (:mod:`edge.daemon.forwarder`): drains the outbox to the
  server in batches; a retryable failure (server unreachable, 5xx) backs off,
  doubling up to a cap, and keeps everything queued; a sighting the server
  refuses as invalid goes to the outbox's dead table (isolated by halving the
  batch, so one bad sighting does not bury its neighbours).
- the *gallery sync* (:mod:`edge.daemon.gallery_sync`): asks for the site's
  gallery with its ETag (304 when unchanged), keeps the last one on disk so a
  reboot without network still matches residents, and replaces the local copy
  whole, so an occupant deleted on the server leaves no template on the box. A
  heartbeat ack announcing a newer gallery version wakes it at once.
- *adaptive templates* (:mod:`edge.adaptive`): a known track that matched with
  high confidence may become an extra local template of that occupant
  (``<data_dir>/adaptive.npz``, never uploaded); matching is over enrolled and
  adaptive templates; a synced gallery that drops an occupant drops theirs.
- the *heartbeat* (:mod:`edge.daemon.status`): per-camera state, fps, frames,
  dropped frames, reconnects, outbox depth/dropped/dead, model and version.
- the device token (:mod:`edge.daemon.token_watch`, no thread of its own): when
  the server refuses it (rotated, or the device disabled) the token source is
  read again and a new token swapped into the shared client, so a
  ``lintel-edge enrol`` on the box resumes delivery without a restart.

The main thread (:mod:`edge.daemon.run`, the composition root) is the
*watchdog*: every tick it samples each live camera's frame counter; a stream
that stays open but delivers nothing for ``stall_timeout_s`` (plus a grace,
FFmpeg's own read timeout usually fires first) is closed and reopened. It also
rewrites ``<data_dir>/status.json``.

Shutdown: SIGTERM/SIGINT -> cameras stop after their current frame, their live
tracks are flushed into the outbox, then the outbox is uploaded for up to
``server.drain_on_stop_s``; what is left stays on disk for the next start. A
second signal exits at once (the outbox is durable, nothing committed is
lost). When every camera has ended (video files without ``loop``), the daemon
keeps forwarding until the outbox is empty and exits 0.

Exactly-once, end to end: a sighting's id is derived from the device, the
camera, the track's start time and its frames, so the same track always has
the same id; the outbox stores it durably before anything is sent, deletes it
only after the server answered for it, and the server stores an id once.
"""
