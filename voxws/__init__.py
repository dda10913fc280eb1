"""voxws: real-time WebSocket text-to-speech for VoxCPM 1.5."""

__version__ = "0.2.0"
