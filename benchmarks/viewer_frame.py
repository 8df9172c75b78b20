"""Viewer costs: the time of one frame from the browser camera, and how much live viewing slows training.

    python benchmarks/viewer_frame.py frame RUN [--side 256] [--mode rgb] [--repeat 5]
    python benchmarks/viewer_frame.py live [--rounds 2] [--chromium] -- fit image --steps 60 ...

``frame``: the viewer's render callback (``viewer.sources.render_view``) on the run's initial view (NeRF: training
camera 0's pose and field of view) at ``--side`` pixels on each side (a square canvas); median and minimum of
``--repeat`` frames after one warm-up frame.

``live``: the same ``rwf fit`` command (everything after ``--``) in fresh processes, alternating: headless, with
the live viewer and one headless Chromium client whose camera stays still, and with the client's camera orbiting
without pause (the server moves it every 0.1 s; the browser echoes each move, as a user dragging would). Speed is
steps per wall-clock second from the first to the last step (evaluations included, for every variant alike); on a
shared machine it moves with other people's jobs, so the CPU seconds the fit process spends per step (training and
viewer threads together) are reported too: their ratio to headless is the viewer's own cost. Chromium runs on the
same CPU (its CPU seconds are reported apart), so the "with client" wall-clock numbers also pay for the browser's
software WebGL.

The last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, machine

sys.path.insert(0, str(ROOT))


# -- one frame -----------------------------------------------------------------------------------------------------
def frame(args) -> dict:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from rwf_render.cameras import look_at  # noqa: PLC0415
    from rwf_render.trainer import resolve_device  # noqa: PLC0415
    from viewer.camera import ViewCamera  # noqa: PLC0415
    from viewer.sources import open_run, render_view  # noqa: PLC0415

    source = open_run(args.run, resolve_device(args.device))
    if source.kind == "nerf" and source.cameras is not None:
        cams = source.cameras
        c2w = cams.c2w[0].double().cpu().numpy()
        fov = 2 * math.atan(0.5 * float(cams.height[0]) / float(cams.fy[0]))
    else:
        pos, target = source.initial_view()
        c2w = look_at(torch.as_tensor(pos, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64),
                      up=torch.tensor(source.up, dtype=torch.float64)).numpy()
        fov = math.radians(50)
    view = ViewCamera.from_c2w(c2w, fov, 1.0)
    mode = args.mode or source.modes[0]
    render_view(source, view, args.side, mode)  # warm-up
    times = []
    for _ in range(args.repeat):
        times.append(render_view(source, view, args.side, mode).seconds)
    first = render_view(source, view, args.side, mode)
    return {"run": str(args.run), "kind": source.kind, "mode": mode, "size": f"{args.side}x{args.side}",
            "median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "frames": len(times), "opaque_fraction": None if first.depth is None else
            round(float(np.mean(first.depth < 1e3)), 3), "machine": machine()}


# -- live training -------------------------------------------------------------------------------------------------
def cpu_seconds(who=None) -> float:
    """user + system CPU seconds of this process (all its threads), or of its waited-for children."""
    import resource  # noqa: PLC0415

    r = resource.getrusage(resource.RUSAGE_SELF if who is None else resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Clock:
    """Trainer callback: wall time and process CPU time from the first step to the last."""

    def __init__(self):
        self.t0 = self.t1 = None
        self.steps = 0

    def on_step(self, trainer, stats):
        if self.t0 is None:
            self.t0, self.c0, self.step0 = time.perf_counter(), cpu_seconds(), trainer.step_idx - 1
        self.t1, self.c1, self.steps = time.perf_counter(), cpu_seconds(), trainer.step_idx - self.step0


def worker(args, fit_argv: list[str]) -> None:
    """One fit in this process; with --view the live viewer; with --orbit the clients' cameras keep moving."""
    import numpy as np  # noqa: PLC0415

    from rwf_render import cli  # noqa: PLC0415
    from rwf_render.trainer import add_process_callback  # noqa: PLC0415

    clock = Clock()
    live = None
    if args.view:
        from viewer.live import LiveViewer  # noqa: PLC0415

        live = LiveViewer(fit_argv[1], port=0)
        add_process_callback(live)
    add_process_callback(clock)
    stop = threading.Event()

    def orbit():
        angle = 0.0
        while not stop.wait(0.1):
            if live is None or live.app is None:
                continue
            pos, target = live.app.source.initial_view()
            offset = np.asarray(pos) - np.asarray(target)
            up = live.app.up_vector()
            angle += 0.05
            # rotate the initial offset about the up axis (Rodrigues)
            rot = (offset * math.cos(angle) + np.cross(up, offset) * math.sin(angle)
                   + up * (up @ offset) * (1 - math.cos(angle)))
            for client in live.app.server.get_clients().values():
                with client.atomic():
                    client.camera.position = target + rot
                    client.camera.look_at = target

    if args.orbit:
        threading.Thread(target=orbit, daemon=True).start()
    if args.wait_client and live is not None:
        orig = live.on_start

        def on_start(trainer):  # the browser connects before the first step, so every variant sees it all along
            orig(trainer)
            deadline = time.time() + 120
            while not live.app.renderers and time.time() < deadline:
                time.sleep(0.2)
            time.sleep(3.0)

        live.on_start = on_start
    assert cli.main(fit_argv) == 0
    stop.set()
    out = {"steps": clock.steps, "wall_s": round(clock.t1 - clock.t0, 3),
           "steps_per_s": round(clock.steps / (clock.t1 - clock.t0), 4),
           "cpu_per_step_s": round((clock.c1 - clock.c0) / clock.steps, 4), "process_cpu_s": round(cpu_seconds(), 2),
           "load_avg": round(os.getloadavg()[0], 2)}
    if live is not None:
        out.update(frames_sent=live.app.frames_sent, clients=live.app.clients_seen)
    out["threads_cpu_s"] = thread_cpu()
    print("RESULT " + json.dumps(out), flush=True)


def thread_cpu() -> dict:
    """CPU seconds of each live thread of this process, by Python thread name (unnamed: native threads such as
    OpenMP workers), largest first."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task.name), "native")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return dict(sorted(((k, round(v, 2)) for k, v in out.items()), key=lambda kv: -kv[1]))


def run_variant(variant: str, fit_argv: list[str], chromium: str | None) -> dict:
    cmd = [sys.executable, __file__, "_worker"]
    if variant != "headless":
        cmd += ["--view", "--wait-client"] + (["--orbit"] if variant == "orbiting" else [])
    tmp = tempfile.mkdtemp(prefix="viewer-bench-")
    children0 = cpu_seconds("children")
    out_dir = ["--out", str(Path(tmp) / "run"), "--force"]
    proc = subprocess.Popen(cmd + ["--"] + fit_argv + out_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT)
    browser, result = None, None
    for line in proc.stdout:
        m = re.search(r"live viewer at (http://\S+)", line)
        if m and chromium and browser is None:
            browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                        "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                                        "--disable-background-networking", "--disable-component-update",
                                        "--disable-sync", "--no-first-run", f"--user-data-dir={tmp}/profile",
                                        "--window-size=800,600", "--remote-debugging-port=0", m.group(1)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    proc.wait()
    if browser is not None:
        browser.terminate()
        browser.wait(20)
    shutil.rmtree(tmp, ignore_errors=True)
    if result is None:
        raise SystemExit(f"{variant}: the fit failed (exit {proc.returncode})")
    if browser is not None:  # the browser's CPU (all its processes), while the whole worker ran
        result["chromium_cpu_s"] = round(cpu_seconds("children") - children0 - result["process_cpu_s"], 2)
    return result


def live(args, fit_argv: list[str]) -> dict:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("live: needs chromium (apt-get install chromium)")
    variants = ("headless", "still", "orbiting")
    results = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            res = run_variant(v, fit_argv, chromium)
            print(f"round {r + 1} {v}: {json.dumps(res)}", flush=True)
            results[v].append(res)
    base = statistics.median(x["steps_per_s"] for x in results["headless"])
    cpu_base = statistics.median(x["cpu_per_step_s"] for x in results["headless"])
    summary = {v: {"steps_per_s": statistics.median(x["steps_per_s"] for x in rs),
                   "relative": round(statistics.median(x["steps_per_s"] for x in rs) / base, 3),
                   "cpu_per_step_s": statistics.median(x["cpu_per_step_s"] for x in rs),
                   "cpu_relative": round(statistics.median(x["cpu_per_step_s"] for x in rs) / cpu_base, 3),
                   "viewer_threads_cpu_s": [round(sum(c for n, c in x["threads_cpu_s"].items()
                                                      if n.startswith(("render-client", "viewer-"))), 2) for x in rs],
                   "frames_sent": [x.get("frames_sent") for x in rs]} for v, rs in results.items()}
    return {"command": "rwf " + " ".join(fit_argv), "rounds": args.rounds, **summary, "machine": machine()}


def main() -> None:
    argv = sys.argv[1:]
    fit_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("frame")
    f.add_argument("run")
    f.add_argument("--side", type=int, default=256)
    f.add_argument("--mode", default=None)
    f.add_argument("--repeat", type=int, default=5)
    f.add_argument("--device", default="cpu")
    lv = sub.add_parser("live")
    lv.add_argument("--rounds", type=int, default=2)
    w = sub.add_parser("_worker")
    w.add_argument("--view", action="store_true")
    w.add_argument("--orbit", action="store_true")
    w.add_argument("--wait-client", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "_worker":
        worker(args, fit_argv)
        return
    if args.cmd == "live" and not fit_argv:
        fit_argv = ["fit", "image", "--steps", "60", "--eval-every", "20", "--quiet", "--device", "cpu"]
    print(json.dumps(frame(args) if args.cmd == "frame" else live(args, fit_argv)))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
