"""On PYTHONPATH, every Python process started with it runs as in the torch-free CPU serving image: `import torch`
(torchvision, captum) fails and `importlib.util.find_spec` says they are not installed. The serving integration
tier puts this directory on PYTHONPATH for `imgclf serve`, and MMS hands the variable on to its workers."""

import sys

for _name in ("torch", "torchvision", "captum"):
    sys.modules[_name] = None  # what Python itself does for a module that must not be imported
