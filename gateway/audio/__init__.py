"""Audio front end of the gateway: uploaded audio files to 16 kHz mono float32 samples."""
