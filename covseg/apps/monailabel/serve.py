"""``python -m covseg.apps.monailabel.serve start_server --app DIR --studies DIR ...``: MONAI Label's own server
command with covseg's pydicom 3 shim installed first. ``covseg label-server`` runs this in its own process group.
"""

from __future__ import annotations

import sys

import covseg.apps.monailabel  # noqa: F401  (installs the shim before monailabel is imported)


def main(argv: list[str] | None = None) -> None:
    """Run ``monailabel`` with ``argv`` (default: this process's arguments)."""
    from monailabel.main import Main

    sys.argv = ["monailabel", *(sys.argv[1:] if argv is None else argv)]
    Main().run()


if __name__ == "__main__":
    main()
