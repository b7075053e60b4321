"""`imgclf report` (arguments still parsed in imgclf.reports; moving here)."""

from imgclf.reports import add_arguments, run  # noqa: F401
