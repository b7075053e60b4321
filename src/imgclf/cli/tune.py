"""`imgclf tune` (arguments still parsed in imgclf.tuning; moving here)."""

from imgclf.tuning import add_arguments, run  # noqa: F401
