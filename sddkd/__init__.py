"""sddkd: Scale Decoupled Distillation fused with Logit Standardization, on top of KD/DKD.

Importing the package is cheap: it imports neither torch nor the CLI.
"""

__version__ = "0.1.0"
