"""``python -m covseg.apps.monailabel.serve start_server --app DIR --studies DIR ...``: MONAI Label's own server
command with covseg's pydicom 3 shim installed first, serving :mod:`covseg.apps.monailabel.asgi` (MONAI Label's web
app with a one-line 400 for form fields that are not JSON) unless ``--uvicorn_app`` is given. ``covseg label-server``
runs this in its own process group.
"""

from __future__ import annotations

import sys

import covseg.apps.monailabel  # noqa: F401  (installs the shim before monailabel is imported)


def main(argv: list[str] | None = None) -> None:
    """Run ``monailabel`` with ``argv`` (default: this process's arguments)."""
    from monailabel.main import Main

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["start_server"] and not any(a.startswith("--uvicorn_app") for a in args):
        args += ["--uvicorn_app", "covseg.apps.monailabel.asgi:app"]  # form fields that are not JSON: a 400 line
    sys.argv = ["monailabel", *args]
    Main().run()


if __name__ == "__main__":
    main()
