"""SCHmUBERT: discrete absorbing-state diffusion (ASD3PM) on symbolic music."""

__version__ = "0.1.0"
