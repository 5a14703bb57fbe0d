"""Serving: a candidate logged as an MLflow pyfunc that takes raw rows and runs on onnxruntime
(:mod:`.log_model`, with the models-from-code file :mod:`.pyfunc_model`), and the model server that serves it
behind a request-size cap (:mod:`.model_server`), answers MLflow's scoring protocol with concurrent requests
scored together (:mod:`.app`) and follows the registry alias it serves (:mod:`.follow`)."""

from .log_model import (PYFUNC_FILE, SPEC_PACKAGE, build_spec_package, example_rows, log_candidate_model,
                        pip_requirements, raw_signature)
from .model_server import serve_command, serve_environment

__all__ = ["SPEC_PACKAGE", "PYFUNC_FILE", "build_spec_package", "raw_signature", "example_rows",
           "pip_requirements", "log_candidate_model", "serve_command", "serve_environment"]
