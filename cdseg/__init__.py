"""cdseg: class-incremental semantic segmentation of aerial images with MiB + contrastive distillation."""

__version__ = "0.1.0"
