"""Lintel registry: import a property registry (住户登记表) into a site.

    lintel-registry template registry.xlsx          # example file, every column documented
    lintel-registry import --site 幸福小区 registry.csv --photos photos.zip [--dry-run]
        [--partial] [--sync] [--report bad-rows.csv] [--db URL]

Pipeline (one module each): :mod:`registry.reader` (CSV in UTF-8/GBK/GB18030 or
XLSX; Chinese or English headers, :mod:`registry.columns`) ->
:mod:`registry.validate` (:mod:`registry.address`, :mod:`registry.idnumber`,
:mod:`registry.fields`) -> :mod:`registry.importer` (match, enrol photos from
:mod:`registry.photos` with ``edge.face.engine.FaceEngine``, plan) ->
:mod:`registry.store` (the plan and the store seam; the server's
``server.registry_api.store`` writes it in one transaction through the
server's services) -> :mod:`registry.report`.

A pure library (docs/architecture.md): it imports nothing of the server, and
of the edge only the bottom floor (``edge.face``, ``edge.wire``).
"""
