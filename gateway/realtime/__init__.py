"""Live transcription: OpenAI's Realtime transcription protocol (`events`), a live session (`session`)
with its audio (`pcm`, `audio`), turns (`turns`, Silero VAD) and confirmed text (`agreement`,
LocalAgreement-2). Transports (gateway/http/realtime.py, gRPC `TranscribeLive`) carry its events; the
operation layer admits it (`Operations.live_transcription`)."""
