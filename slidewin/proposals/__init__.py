"""Region proposals scored by the classifier (R-CNN without training).

The data flow: `generators` (image -> candidate boxes: selective search, or the window grid
itself) -> `scoring` (boxes -> class probabilities: crops, or pooled from the shared dense
feature maps) -> `detector` (target scores, threshold, class-aware NMS -> `Detections`).
"""
