"""Transcription: installed Whisper models, long-audio windows, and the service over Triton."""
