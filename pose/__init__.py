"""Pose pipeline (numpy / OpenCV / onnxruntime): DWPose extraction, official alignment, rendering, augmentation.

Never imports ComfyUI or torch.
"""
