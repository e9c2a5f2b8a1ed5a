"""dann: config-driven domain adaptation around the gradient reversal layer."""

__version__ = "0.1.0"
