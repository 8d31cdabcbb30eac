"""The face engine: detection, alignment, quality, embedding (bottom floor).

Left empty on purpose: importing a light submodule (``errors``, ``reasons``,
``types``, ``models``) must not load cv2 or onnxruntime, so the server and the
registry can use them without the face engine installed.
"""
