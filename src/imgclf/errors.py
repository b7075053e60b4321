"""The one error type a user can act on.

Anything raised as `UserError` is shown to the user as it is (CLI stderr, `/opt/ml/output/failure`): the message
must say what was wrong and what to do. Every other exception is a bug in imgclf and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: hyperparameters, data, paths. The message is the whole explanation."""


class TrainingInterrupted(UserError):
    """SIGTERM (spot reclaim, `docker stop`, StopTrainingJob) arrived; a checkpoint was saved first."""
