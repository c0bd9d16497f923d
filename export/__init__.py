"""slidewin_export: the training-framework side of slidewin.

Turns Keras and PyTorch classifiers into self-describing slidewin ONNX models (uint8 RGB NHWC
``image`` in, ``probabilities`` out, preprocessing inside the graph, metadata in
``metadata_props``). TensorFlow and torch are imported inside the exporter functions only, so
importing this package (and building the CLI parser) stays fast and works without them.
"""
