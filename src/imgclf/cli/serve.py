"""`imgclf serve` (arguments still parsed in imgclf.serving.server; moving here)."""

from imgclf.serving.server import add_arguments, run  # noqa: F401
