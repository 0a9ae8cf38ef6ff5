"""``covseg label-server``: covseg's MONAI Label app behind MONAI Label's server, local and offline by default.

The server runs as a child process in its own process group (the training subprocess MONAI Label starts joins
that group), so Ctrl-C or SIGTERM stops all of it: SIGTERM to the group, SIGKILL after a grace period.
See docs/monailabel.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

APP_PACKAGE_DIR = Path(__file__).resolve().parents[1] / "apps" / "monailabel"
INSTALL_HINT = "run scripts/install-label-server.sh (see docs/monailabel.md)"
GRACE_S = 10.0
STUDY_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd")  # what MONAI Label's local datastore lists (top level only)
_APP_SHIM = '"""covseg\'s MONAI Label app, working copy (written by covseg label-server)."""\n\n' \
            "from covseg.apps.monailabel.main import CovsegLabelApp  # noqa: F401\n"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``label-server`` on the ``covseg`` sub-command parser."""
    p = sub.add_parser("label-server", help="serve covseg's models to 3D Slicer / OHIF through MONAI Label",
                       description="Start MONAI Label with covseg's app: auto-segmentation of CT volumes (infection, "
                                   "lungs, GGO/consolidation when that bundle exists) and fine-tuning on saved labels.",
                       epilog="examples:\n  covseg label-server --studies ct_folder/\n"
                              "  covseg label-server --studies ct_folder/ --port 8000 --threads 2\n\n"
                              "needs the server's packages: " + INSTALL_HINT,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--studies", required=True, metavar="DIR",
                   help="folder of CT volumes (.nii.gz, .nii, .nrrd) to label")
    p.add_argument("--port", type=int, default=0, metavar="P", help="port (default: a free one, printed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--app-dir", metavar="DIR",
                   help="app folder where fine-tuned models and logs are written (default: covseg's app folder)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch in the server and in training")
    p.add_argument("--verbose", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO", help="server log level")


def studies_warning(studies: Path) -> str | None:
    """A warning when ``studies`` holds no volume MONAI Label's datastore lists (e.g. only DICOM series folders,
    which it does not read), else None."""
    names = sorted(p.name for p in studies.iterdir())
    if any(fnmatch.fnmatchcase(name, pattern) for name in names for pattern in STUDY_PATTERNS):
        return None
    folders = [name for name in names if (studies / name).is_dir() and name != "labels"]
    hint = (f"; its {len(folders)} sub-folder(s) ({folders[0]}/, ...) are not read: convert each DICOM series to one "
            ".nii.gz file in the folder itself") if folders else ""
    return (f"warning: {studies}: no .nii.gz, .nii or .nrrd volume, the datastore starts empty{hint} (or upload "
            "images: PUT /datastore/image)")


def free_port(host: str) -> int:
    """A port that is free on ``host`` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (in use, not allowed), in a few words, or None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host}:{port} ({exc.strerror or exc})"
    return None


def prepare_app_dir(app_dir: str | None) -> Path:
    """The app folder: covseg's own, or ``app_dir`` with a ``main.py`` that loads covseg's app class."""
    if app_dir is None:
        return APP_PACKAGE_DIR
    folder = Path(app_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    main_py = folder / "main.py"
    if not main_py.exists():
        main_py.write_text(_APP_SHIM)
    return folder


def server_env(threads: int | None) -> dict[str, str]:
    """The server's environment: offline, no experiment tracking, no scoring, ``threads`` OpenMP threads."""
    env = dict(os.environ)
    env.update({"MONAI_LABEL_TRACKING_ENABLED": "false", "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
                "MONAI_LABEL_TASKS_SCORING": "false", "PYTHONUNBUFFERED": "1"})
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    return env


def stop_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM the process group of ``proc`` (server and training), SIGKILL whatever is left after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(proc.pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(args: argparse.Namespace) -> int:
    """Start the server, print where it listens, wait; stop its whole process group on Ctrl-C / SIGTERM."""
    if importlib.util.find_spec("monailabel") is None:
        print(f"error: MONAI Label is not installed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    studies = Path(args.studies)
    if not studies.is_dir():
        reason = "is not a folder (give the folder holding the CT volumes)" if studies.exists() else \
            "studies folder not found"
        print(f"error: {studies}: {reason}", file=sys.stderr)
        return 2
    if not os.access(studies, os.W_OK):  # before MONAI Label starts: it would end in a 140-line traceback
        print(f"error: {studies}: studies folder is not writable (the datastore keeps datastore_v2.json, .lock and "
              "labels/ there); give a writable folder, e.g. a copy of the volumes", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be within 0-65535, got {args.port}", file=sys.stderr)
        return 2
    if args.port:  # before MONAI Label starts: it would end in uvicorn's traceback
        problem = port_problem(args.host, args.port)
        if problem:
            print(f"error: --port {args.port}: {problem}", file=sys.stderr)
            return 2
    try:
        app_dir = prepare_app_dir(args.app_dir)
        port = args.port or free_port(args.host)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not os.access(app_dir, os.W_OK):
        print(f"error: {app_dir}: app folder is not writable (give --app-dir DIR)", file=sys.stderr)
        return 2
    warning = studies_warning(studies)  # after the usage errors: those stay one line
    if warning:
        print(warning, file=sys.stderr)
    cmd = [sys.executable, "-m", "covseg.apps.monailabel.serve", "start_server", "--app", str(app_dir),
           "--studies", str(studies.resolve()), "--host", args.host, "--port", str(port), "--verbose", args.verbose]
    # cwd = the app folder: MONAI Label reads a .env from its working directory, so a stray one cannot change it
    proc = subprocess.Popen(cmd, env=server_env(args.threads), cwd=app_dir, start_new_session=True)
    print(f"covseg label-server: http://{args.host}:{port}/ (pid {proc.pid}, process group {proc.pid}); "
          f"app {app_dir}; studies {studies.resolve()}; Ctrl-C stops it", flush=True)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell that starts a background job ignores it there, and Python would then keep ignoring it
    previous = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        print("covseg label-server: stopping", file=sys.stderr, flush=True)
        stop_group(proc)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None or _group_alive(proc.pid):  # e.g. a training left behind by a server that died
            stop_group(proc)
