"""Training: `fit(hyperparameters, RunConfig)` trains and writes the model directory.

fit.py             fit(): set-up, the epoch loop of named steps, finish
setup.py           RunConfig (where a run reads and writes) and set_up() -> Run (data, network, optimiser, DDP)
loaders.py         channels -> datasets -> DataLoaders (images, or cached backbone features)
steps.py           train_epoch(), evaluate(), the SIGTERM StopFlag
early_stopping.py  BestSoFar: the best epoch, its weights, epochs since it improved
resume.py          checkpoint identity, save and resume
results.py         the best weights back, the test split, reports and the artifact written last
contract.py        the container side of the SageMaker training contract (/opt/ml, SM_*) and its entry points
distributed.py     torch.distributed layout across hosts and GPUs
debugger.py        the SageMaker Debugger (smdebug) hook
profiler.py        system utilisation and torch.profiler traces
"""

from imgclf.training.fit import fit
from imgclf.training.setup import RunConfig

__all__ = ["RunConfig", "fit"]
