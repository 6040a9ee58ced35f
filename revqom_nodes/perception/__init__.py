"""Perception: voxelizer, sparse backbone, BEV warp, fusion, anchor head, box coding, NMS, detector.

Import from the modules (this package imports nothing itself, so that the light
modules do not pull in spconv, whose import takes about 10 s of CPU):

- ``config``: ``DetectorConfig`` (``from_dict`` / ``to_dict``), ``BackboneConfig``,
  ``FusionConfig``, ``HeadConfig``;
- ``detector``: ``build_detector``, ``CooperativeDetector``, ``FrameInput``,
  ``make_frame_input``, ``DetectorOutput``, ``DetectionLosses``;
- ``postprocess``: ``Detections``, ``merge_detections``;
- ``grid``: ``BevGrid`` (the BEV axis convention); ``errors``: ``PerceptionError``;
- ``nms``: ``rotated_nms`` (torch, any device); ``iou``: the rotated BEV IoU (numpy and torch);
- ``bench``: ``revqom bench detector`` (training-step and inference timings) and
  ``revqom bench nms`` (the numpy reference NMS against the torch one).
"""
