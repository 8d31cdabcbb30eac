"""The edge stream pipeline: capture, motion gate, tracker, per-track matching and sightings.

See :mod:`edge.pipeline.stream` for the flow and its cost model.
"""
