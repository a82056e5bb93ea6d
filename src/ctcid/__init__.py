"""ctcid: circulating tumour cell identification in imFISH images."""

__version__ = "0.1.0"
