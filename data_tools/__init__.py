"""Data tools built on rwf_render: synthetic scenes from meshes, COLMAP / LLFF / photos to transforms.json,
dataset checks and downscaling. Command line: ``rwf data ...`` (see :mod:`data_tools.cli`).

Importing this package is cheap; open3d, trimesh and pycolmap load only in the commands that need them.
"""
