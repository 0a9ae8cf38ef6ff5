"""covseg: COVID-19 lung-infection segmentation of chest CT on MONAI (Inf-Net, Semi-Inf-Net, JCS)."""

__version__ = "0.1.0"
