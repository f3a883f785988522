"""Tiny random T5 and BART summarizers with tokenizers trained here, built in the tests.

Weight matrices are redrawn with a large std: with the default init (0.02) a tiny seq2seq model
emits one constant token whatever its input, and parity tests on it would prove nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    PegasusConfig,
    PegasusForConditionalGeneration,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

MAX_INPUT_TOKENS = 48
SHAPE_T5 = {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4}
SHAPE_BART = {
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_position_embeddings": 64,
}


def _train(corpus: list[str], special: list[str], template: str) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(corpus, trainers.WordLevelTrainer(vocab_size=400, special_tokens=special))
    ids = [(token, tokenizer.token_to_id(token)) for token in special if token in template]
    tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=ids)
    return tokenizer


def _redraw(model: torch.nn.Module, std: float) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim >= 2:
                parameter.normal_(0.0, std)


def _save(folder: Path, model, tokenizer: Tokenizer, **tokens: str) -> Path:
    model.eval().save_pretrained(folder)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=MAX_INPUT_TOKENS,
        model_input_names=["input_ids", "attention_mask"],
        **tokens,
    )
    wrapped.save_pretrained(folder)
    return folder


def build_tiny_t5(folder: Path, corpus: list[str], *, seed: int = 0) -> Path:
    """T5 layout: pad 0 (also the decoder start), eos 1, inputs end with </s>; prefix `summarize: `."""
    torch.manual_seed(seed)
    tokenizer = _train(corpus, ["<pad>", "</s>", "<unk>"], "$A </s>")
    config = T5Config(
        vocab_size=tokenizer.get_vocab_size(),
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        task_specific_params={"summarization": {"prefix": "summarize: "}},
        **SHAPE_T5,
    )
    model = T5ForConditionalGeneration(config)
    _redraw(model, 0.3)
    return _save(folder, model, tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_tiny_bart(folder: Path, corpus: list[str], *, seed: int = 0) -> Path:
    """BART layout: <s> 0, pad 1, </s> 2 (also the decoder start), forced EOS at the length limit."""
    torch.manual_seed(seed)
    tokenizer = _train(corpus, ["<s>", "<pad>", "</s>", "<unk>"], "<s> $A </s>")
    config = BartConfig(vocab_size=tokenizer.get_vocab_size(), **SHAPE_BART)
    model = BartForConditionalGeneration(config)
    _redraw(model, 0.6)
    return _save(
        folder, model, tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def build_tiny_pegasus(folder: Path, corpus: list[str], *, seed: int = 0) -> Path:
    """Pegasus layout: pad 0 (also the decoder start), eos 1, inputs end with </s>; sinusoidal positions."""
    torch.manual_seed(seed)
    tokenizer = _train(corpus, ["<pad>", "</s>", "<unk>"], "$A </s>")
    config = PegasusConfig(
        vocab_size=tokenizer.get_vocab_size(),
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        **SHAPE_BART,
    )
    model = PegasusForConditionalGeneration(config)
    _redraw(model, 0.3)
    return _save(folder, model, tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
