"""SDK v2: the CreateTrainingJob input config `imgclf sagemaker train --input-mode/--distribution` builds, unsent."""

from __future__ import annotations

from _common import emit, load_args

from imgclf.sagemaker import sdk_v2
from imgclf.sagemaker.target import resolve_target

args = load_args()
target = resolve_target(local=False, role=args["role"], bucket="b", region="us-east-1", check_credentials=False)
session = sdk_v2.session(target)
estimator = sdk_v2.build_estimator(
    target, image_uri=args["image"], instance_count=2, debugger=False, sagemaker_session=session
)
inputs = sdk_v2.channel_inputs(
    args["channels"], target, session, input_mode=args["input_mode"], distribution=args["distribution"]
)
emit({"input_config": sdk_v2.training_request(estimator, inputs)["input_config"]})
