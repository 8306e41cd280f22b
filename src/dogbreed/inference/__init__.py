"""The prediction pipeline in stages: sources -> decode + preprocess -> runners -> scoring -> Prediction -> sinks.

Each module is one stage with one job and one error policy; `dogbreed.predict.Predictor` composes them for a set of
frozen options, and executors (a decode thread, DataLoader workers; Ray in `batch_ray`) move batches between them.
"""
