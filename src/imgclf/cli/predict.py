"""`imgclf predict` (arguments still parsed in imgclf.client; moving here)."""

from imgclf.client import add_arguments, run  # noqa: F401
