"""Frame sources: a video file, a webcam, the screen. Each yields timestamped RGB frames."""
