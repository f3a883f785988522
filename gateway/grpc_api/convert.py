"""Result objects to and from `samo.v1` messages."""

from __future__ import annotations

from gateway.emotions.service import EmotionOptions, EmotionResult, LabelScore, ModelInfo, TextEmotions
from gateway.grpc_api import samo_v1_pb2 as pb


def emotion_response(result: EmotionResult) -> pb.DetectEmotionsResponse:
    model = result.model
    return pb.DetectEmotionsResponse(
        model=pb.ModelInfo(
            name=model.name,
            version=model.version,
            kind=model.kind,
            source=model.source,
            description=model.description,
        ),
        results=[
            pb.TextEmotions(
                labels=[pb.LabelScore(label=s.label, score=s.score) for s in text.labels],
                scores=[pb.LabelScore(label=label, score=score) for label, score in text.scores.items()],
                truncated=text.truncated,
                tokens=text.tokens,
            )
            for text in result.results
        ],
        options=pb.EmotionOptions(threshold=result.options.threshold, top_k=result.options.top_k),
    )


def emotion_result(message: pb.DetectEmotionsResponse) -> EmotionResult:
    model, options = message.model, message.options
    return EmotionResult(
        results=tuple(
            TextEmotions(
                labels=tuple(LabelScore(s.label, s.score) for s in text.labels),
                scores={s.label: s.score for s in text.scores},
                truncated=text.truncated,
                tokens=text.tokens,
            )
            for text in message.results
        ),
        model=ModelInfo(model.name, model.version, model.kind, model.source, model.description),
        options=EmotionOptions(
            threshold=options.threshold if options.HasField("threshold") else None,
            top_k=options.top_k if options.HasField("top_k") else None,
        ),
    )
