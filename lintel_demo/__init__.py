"""The whole-system demo (top floor): sample site, generated video, server + edge.

Not part of the edge package: it starts the server and imports the edge, the
registry tool and the server's command line, so it sits above all of them
(docs/architecture.md). ``lintel-demo`` (or ``make demo``) runs it; its video
generator (:mod:`lintel_demo.videogen`) also makes the tests' and benches'
synthetic entrance videos.
"""
