"""The inference path: io -> preprocess -> sliding window + TTA + fold ensemble -> export ->
postprocess -> report. Nothing here imports training code, nnunet.training or nnunet.inference."""
