"""Speech: replies spoken aloud (pyttsx3 on its own thread) and questions asked aloud (push-to-talk + whisper.cpp).

Qt-free, like the rest of the core: the UI wraps these in signals. Every optional native piece
(espeak-ng, PortAudio, whisper.cpp) is loaded lazily and its absence becomes a message, never a crash.
"""
