"""Frame sources: a video file, a webcam, the screen. Each yields timestamped RGB frames.

Entry point: ``open_source("clip.mp4" | "camera:1" | "screen:2" | "region:X,Y,W,H" | "window:TITLE")``.
Submodules are imported on demand so that parsing a spec never loads OpenCV or mss.
"""
