"""`imgclf sagemaker` (arguments still parsed in imgclf.launch; moving here)."""

from imgclf.launch import add_arguments, run  # noqa: F401
