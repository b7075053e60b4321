"""Serving on the SageMaker hosting contract: multi-model-server + sagemaker-inference, TorchServe-style handler.

One concern per module (the sagemaker-inference-toolkit layout):

    environment.py      every SAGEMAKER_* / IMGCLF_* serving knob, typed (ServerSettings for the front-end,
                        HandlerSettings for a worker), with defaults; the worker-count rule; the only module here
                        that reads the environment
    errors.py           the ONE place an error becomes an HTTP status code and message
    decoders.py         request body + Content-Type -> images (never fetches URLs)
    encoders.py         probabilities + Accept -> response body
    handler.py          ImageClassifierHandler: initialize / preprocess / inference / postprocess (TorchServe shape)
    handler_service.py  the sagemaker-inference HandlerService MMS loads (eager model load)
    torchserve_handler.py  the same handler as a TorchServe handler module
    server.py           the model server `imgclf serve` runs: MMS config, start, health, SIGTERM
    imgclf-mms.jar      the MMS front-end main class + /execution-parameters (package data; docker/mms/ builds it)
"""
