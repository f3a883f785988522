"""One seq2seq generation engine (greedy and beam search with a KV cache) for every encoder-decoder
SAMO serves: Whisper's ONNX backend and the T5/BART/Pegasus summarizers.

It reproduces transformers' `generate` token for token: the same logits processors in the same
order, the same beam bookkeeping (length penalty, early stopping). Each row of a batch carries its
own settings, so requests with different limits are generated together; only the beam width splits
a batch.
"""

from samo.generation.search import Generated, generate
from samo.generation.settings import GenerationSettings, SpecialTokens

__all__ = ["Generated", "GenerationSettings", "SpecialTokens", "generate"]
