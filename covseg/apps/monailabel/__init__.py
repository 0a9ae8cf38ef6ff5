"""covseg's MONAI Label app: covseg's models as auto-segmentation, and fine-tuning on annotators' labels.

Start it with ``covseg label-server --studies DIR`` (see docs/monailabel.md). The folder is a MONAI Label app
(``main.py``); importing the package first installs the pydicom 3 shim for pydicom-seg (:mod:`.compat`).
"""

from covseg.apps.monailabel import compat  # noqa: F401  (must run before monailabel is imported)
