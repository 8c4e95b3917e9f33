"""camvis: visibility estimation on webcam images with multi-magnification CNNs, at cluster scale."""

__version__ = "0.1.0"
