"""The pipeline's steps as plain typed functions over paths and parameters, one subpackage per subsystem.

``steps`` is the only module the KFP graph (``pipeline/``) calls; it glues ``data`` (raw files, datasets,
encoders, feature spec, prepare), ``training`` (train, evaluate, export, launchers), ``search`` (Optuna),
``tracking`` (MLflow runs), ``registry`` (versions, promotion), ``serving`` (the pyfunc model and its
server) and ``reports`` (plots and the evaluation report). Nothing here is imported by ``mtl_models``.
"""
