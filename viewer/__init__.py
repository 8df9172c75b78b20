"""The interactive viewer: any run directory in the browser, live training, camera paths (built on viser).

    rwf view RUN                    cli.py       open a run (image, sdf, nerf): sources + app
    rwf fit KIND ... --view         live.py      the same beside a running trainer (entry point rwf_render.live)
    camera_path.json                camera_path.py  the format, its reader and interpolation (no viser)

Data flow: browser camera (viser) -> camera.py (OpenGL c2w, rwf_render Cameras) -> sources.py (one source per run
kind renders a camera) -> render_loop.py (progressive frames per browser) -> the page; app.py and panels.py build
the page. This package sits on top of ``rwf_render`` and is never imported by it; importing it does not import
viser.
"""
