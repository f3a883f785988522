"""The journal pipeline: transcript (for audio), then emotions and summary concurrently."""
